"""The MIL-CNN of Kraus, Ba & Frey (2016): a fully convolutional network whose per-class
probability maps are pooled into image-level probabilities by a MIL pooling layer.

Architecture (``width = w``, ``output_stride = 2**k``)::

    stem      conv3x3(C -> w) BN ReLU                                  stride 1
    stage s   conv2x2/2(c -> 2c) BN ReLU, conv3x3(2c -> 2c) BN ReLU    s = 1..k, stride 2**s
    context   n x [conv3x3 BN ReLU]                                    stride 2**k
    head      conv1x1(-> n_classes), sigmoid  -> class maps (B, n_classes, H / 2**k, W / 2**k)
    pooling   class maps -> bag probabilities (B, n_classes)

Downsampling uses 2x2 stride-2 convolutions, so map pixel ``i`` covers exactly input
pixels ``[i * stride, (i + 1) * stride)``; inputs whose size is not a multiple of the
stride are zero-padded at the bottom and right (zero is the background after percentile
normalisation). ``milcnn.process.postprocess.upsample_maps`` inverts that geometry.

With the defaults (``width=24``, ``output_stride=4``, ``context=1``) a class-map pixel
covers 4 x 4 input pixels and sees 26 px, about one yeast cell; see docs/model.md for the
measured parameter count and FLOPs per 10^6 pixels (``python -m training.model``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from milcnn.process.preprocess import NormalizationConfig
from .pooling import POOLINGS, build_pooling

__all__ = ["ModelConfig", "MILCNN", "MILOutput", "count_flops", "valid_instances"]

MIN_SIZE = 64


@dataclass
class ModelConfig:
    """Everything needed to rebuild a MIL-CNN and feed it images; round-trips through JSON.

    Input:
        channels: channel names, in the order the model expects them.
        normalization: per-channel percentile normalisation (``milcnn.process.preprocess``).
        min_size: smallest height or width accepted, in pixels.
        pixel_size: um per pixel of the training images (None: unknown).
        cell_diameter: their typical cell diameter in px (None: unknown); the SDK resizes
            users' images to this scale when told theirs (``--pixel-size``, ``--cell-diameter``).
        input_cell_diameter: the cell diameter in px assumed of an image given without a scale
            (None: such images are used as they are).
    Head:
        classes: class names; maps and probabilities follow this order.
        multi_label: if True an image may carry several labels (``a|b`` in a manifest).
        pooling: one of ``training.pooling.POOLINGS``; pooling_params its options.
    Backbone:
        width: channels after the stem; doubled at each downsampling stage.
        output_stride: 4, 8 or 16; class-map pixels are this many input pixels across.
        context: 3x3 convolutions at the output stride; they set the receptive field
            (``5 * stride - 2 + 2 * stride * context`` px), which should stay about one
            cell: a larger one lets background pixels borrow their neighbours' class.
    """

    channels: tuple[str, ...]
    classes: tuple[str, ...]
    pooling: str = "noisy_and"
    pooling_params: dict = field(default_factory=lambda: {"a": 10.0})
    multi_label: bool = False
    width: int = 24
    output_stride: int = 4
    context: int = 1
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    min_size: int = MIN_SIZE
    pixel_size: float | None = None
    cell_diameter: float | None = None
    input_cell_diameter: float | None = None

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.classes = tuple(self.classes)
        if isinstance(self.normalization, dict):
            self.normalization = NormalizationConfig.from_dict(self.normalization)
        if not self.channels or not self.classes:
            raise ValueError("a model needs at least one channel and one class")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {self.classes}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose from {', '.join(POOLINGS)}")
        if self.output_stride not in (4, 8, 16):
            raise ValueError(f"output_stride must be 4, 8 or 16, got {self.output_stride}")
        if not 0 <= self.context <= 4:
            raise ValueError(f"context must be 0 to 4 convolutions, got {self.context}")
        if self.width < 4:
            raise ValueError(f"width must be at least 4, got {self.width}")
        for name in ("pixel_size", "cell_diameter", "input_cell_diameter"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        if self.min_size < self.output_stride:
            raise ValueError(f"min_size {self.min_size} is below the output stride {self.output_stride}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["classes"] = list(self.channels), list(self.classes)
        d["normalization"] = self.normalization.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The one place old configs are migrated: fields added since take their defaults."""
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


class MILOutput(NamedTuple):
    probabilities: torch.Tensor  # (B, n_classes) bag probabilities
    class_maps: torch.Tensor  # (B, n_classes, ceil(H / stride), ceil(W / stride)) instance probabilities


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == stride else dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MILCNN(nn.Module):
    """Fully convolutional MIL network; ``forward(x)`` takes normalised (B, C, H, W) images."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w = config.width
        layers = [_conv_bn(len(config.channels), w, 3)]
        c = w
        for _ in range(int(math.log2(config.output_stride))):
            layers += [_conv_bn(c, 2 * c, 2, stride=2), _conv_bn(2 * c, 2 * c, 3)]
            c *= 2
        layers += [_conv_bn(c, c, 3) for _ in range(config.context)]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, len(config.classes), 1)
        nn.init.constant_(self.head.bias, -3.0)  # instances start mostly negative, as most are
        self.pooling = build_pooling(
            config.pooling, n_classes=len(config.classes), in_features=c, params=config.pooling_params
        )
        self.feature_channels = c

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> MILOutput:
        """Class maps and bag probabilities of normalised images ``x`` (B, C, H, W).

        ``sizes`` (B, 2) int: each image's own (height, width) when it was padded with background
        to share the batch or reach ``min_size``; only the map pixels that cover the image are
        pooled (``valid_instances``). None: every pixel of ``x`` is the image.
        """
        s = self.config.output_stride
        if not (torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()):
            if x.shape[-1] < self.config.min_size or x.shape[-2] < self.config.min_size:
                raise ValueError(
                    f"input of {x.shape[-2]}x{x.shape[-1]} px is below the model's minimum of {self.config.min_size} px"
                )
        pad_h, pad_w = (-x.shape[-2]) % s, (-x.shape[-1]) % s
        x = F.pad(x, (0, pad_w, 0, pad_h))  # (B, C, H', W'), multiples of the stride
        features = self.backbone(x)  # (B, D, H'/s, W'/s)
        maps = torch.sigmoid(self.head(features))  # (B, K, H'/s, W'/s)
        mask = None if sizes is None else valid_instances(sizes, maps.shape[-2:], s)  # (B, H'/s, W'/s)
        return MILOutput(self.pooling(maps, features, mask=mask), maps)


def valid_instances(sizes: torch.Tensor, map_shape, stride: int) -> torch.Tensor:
    """(B, h, w) bool: the class-map pixels that cover some of each image, for images of
    ``sizes`` (B, 2) (height, width) padded at the bottom and right to a map of ``map_shape``."""
    sizes = torch.as_tensor(sizes)
    rows = torch.arange(map_shape[0], device=sizes.device)[None, :, None]  # (1, h, 1)
    cols = torch.arange(map_shape[1], device=sizes.device)[None, None, :]  # (1, 1, w)
    h = (sizes[:, 0] + stride - 1) // stride  # (B,) ceil: a partly covered pixel holds image
    w = (sizes[:, 1] + stride - 1) // stride
    return (rows < h[:, None, None]) & (cols < w[:, None, None])


def count_flops(model: MILCNN, height: int, width: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of the convolutions for one (height x width) image."""
    total = 0

    def hook(module: nn.Conv2d, _inp, out):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * out.numel() // out.shape[0]  # per image

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, len(model.config.channels), height, width))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def receptive_field(config: ModelConfig) -> int:
    """Theoretical receptive field in input pixels of one class-map pixel."""
    s = config.output_stride
    return 5 * s - 2 + 2 * s * config.context  # stem 3, each stage 2**(i-1) + 2 * 2**i, context 2s each


def _describe() -> str:
    from .data.yeast import YEAST_CHANNELS, YEAST_CLASSES

    lines = ["| configuration | output stride | width | context | receptive field (px) | parameters "
             "| GFLOP per 1024 x 1024 image | GFLOP per 10^6 pixels |", "|---|---|---|---|---|---|---|---|"]
    variants = [("default", {}), ("", {"context": 3}), ("", {"output_stride": 8, "width": 16, "context": 0}),
                ("", {"output_stride": 8, "width": 16, "context": 1})]
    for label, kw in variants:
        cfg = ModelConfig(channels=YEAST_CHANNELS, classes=YEAST_CLASSES, **kw)
        m = MILCNN(cfg)
        params = sum(p.numel() for p in m.parameters())
        gflop = count_flops(m, 1024, 1024) / 1e9
        lines.append(f"| {label} | {cfg.output_stride} | {cfg.width} | {cfg.context} | {receptive_field(cfg)} "
                     f"| {params:,} | {gflop:.1f} | {gflop * 1e6 / 1024 ** 2:.1f} |")
    return "\n".join(lines) + "\n\n(2 input channels, 11 classes, Noisy-AND pooling; FLOPs count 2 per multiply-add " \
        "of every convolution; a 1024 x 1024 image is 1.049 x 10^6 pixels.)"


if __name__ == "__main__":
    print(_describe())
