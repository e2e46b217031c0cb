"""Train a MIL-CNN from a manifest, with image-level labels only.

Usage::

    python -m training.train --data data/yeast-train/manifest.csv --val data/yeast-val/manifest.csv \\
        --channels gfp,rfp --out runs/yeast-loc
    python -m training.train --config runs/yeast-loc/train_config.json --resume runs/yeast-loc/last.pt

Every flag can also be given in a JSON file (``--config``; flags on the command line win).
The run folder gets ``train_config.json`` (the full settings), ``model_config.json``,
``metrics.jsonl`` (one JSON object per epoch), ``last.pt`` (to resume) and ``best.pt``
(highest validation accuracy, ties broken by lower loss); with ``--keep-epochs`` also every
epoch's checkpoint as ``epochs/NNN.pt``. ``--init CHECKPOINT`` starts from a trained model's
weights. Checkpoints hold only tensors and plain Python values and load with
``torch.load(..., weights_only=True)``.

Runs are seeded: the same settings on the same machine give the same weights, and a run
resumed from ``last.pt`` continues exactly as if it had not stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler

from milcnn.io.images import write_atomic
from milcnn.logs import log_to_stderr
from milcnn.process.preprocess import NormalizationConfig
from .checkpoint import read_checkpoint
from .data.dataset import CellMosaic, CropDataset, ImageSet, Photometric, balanced_weights
from .data.manifest import read_manifest
from .fit import FitState, fit, resume_state
from .options import add_options, settings_from_args, prog
from .model import MILCNN, ModelConfig
from .regularizers import edge_aware_smoothness
from .metrics import image_accuracy

__all__ = ["TrainConfig", "train", "bag_loss", "warmup_cosine", "train_step"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str = ""  # the training manifest (CSV: path or path_<channel>, label[, split, group])
    val: str | None = None  # a validation manifest (else the manifest's split column, or a grouped hold-out of val_fraction)
    out: str = "runs/milcnn"  # the run folder (checkpoints, metrics.jsonl, settings)
    channels: str | None = None  # comma-separated; needed with a 'path' column
    pooling: str = "noisy_and"  # the MIL pooling: noisy_and (the paper's), max, mean, lse, gm or attention
    pooling_params: dict = field(default_factory=lambda: {"a": 10.0})
    width: int = 24  # channels of the network's first convolutions (later layers are multiples)
    output_stride: int = 4  # input pixels per class-map pixel (a power of two)
    context: int = 1  # extra dilated context blocks before the class maps
    multi_label: bool = False  # images may carry several labels (sigmoid outputs; set anyway when a manifest row has two)
    smoothness: float = 2.0  # weight of the edge-aware smoothness of class maps; 0: the paper's loss
    smoothness_sigma: float = 0.1  # the image-edge contrast at which the smoothness weight halves
    photometric: bool = False  # intensity augmentations (training.data.dataset.Photometric) besides crops and flips
    scale_jitter: float = 0.0  # crops resized by a zoom in [1/(1+j), 1+j] (training.data.dataset.CropDataset)
    cell_mosaic: float = 0.0  # share of crops made of single-cell tiles (training.data.dataset.CellMosaic)
    mosaic_channel: str | None = None  # the channel whose objects centre those tiles (default: the first)
    # the per-image upper percentile of the input normalisation, recorded in the model for the SDK
    # (milcnn.process.preprocess.NormalizationConfig): lower keeps a few very bright cells or debris from
    # setting the contrast of the rest of an image
    norm_high: float = NormalizationConfig.high
    epochs: int = 20  # passes of steps_per_epoch batches
    steps_per_epoch: int = 100  # batches per epoch (then validation and a checkpoint)
    batch_size: int = 16  # crops per batch
    crop: int = 128  # training crop size in px (a multiple of output_stride)
    lr: float = 2e-3  # AdamW learning rate (warm-up, then cosine decay)
    weight_decay: float = 1e-4  # AdamW weight decay
    val_fraction: float = 0.1  # share of the image groups held out for validation when no val manifest or split is given
    seed: int = 0  # seed of the weights, crops and sampling (the same seed gives the same run)
    pixel_size: float | None = None  # um per pixel of the training images, recorded in the model
    cell_diameter: float | None = None  # their typical cell diameter in px, recorded in the model
    device: str = "auto"  # auto, cpu or cuda
    threads: int = 0  # 0: all cores
    # domain-adversarial training on unlabelled images of the target screen (training.domain)
    domain_data: str | None = None  # a folder of unlabelled .tif images
    domain_cell_diameter: float | None = None  # their cell diameter in px (resized to cell_diameter)
    domain_weight: float = 0.1  # weight of the domain-adversarial loss
    domain_batch: int = 4  # unlabelled crops added to every batch
    domain_class_weighting: bool = False  # weight simulated crops by their class's predicted share among the unlabelled
    # start from the weights of this checkpoint (same model settings; a new optimizer and schedule): fine-tuning
    # a trained model on other simulated images; --resume instead continues a stopped run
    init: str | None = None
    keep_epochs: bool = False  # also keep every epoch's checkpoint as epochs/NNN.pt (to choose one afterwards)


def bag_loss(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between bag probabilities and (multi-)hot targets, as in the paper."""
    return F.binary_cross_entropy(probabilities.clamp(1e-6, 1 - 1e-6), targets)


def warmup_cosine(optimizer, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup))
                                             * 0.5 * (1 + math.cos(math.pi * step / total_steps)))


def train_step(model: MILCNN, x: torch.Tensor, y: torch.Tensor, optimizer, scheduler, *, smoothness: float,
               smoothness_sigma: float, domain=None, progress: float = 0.0, extra=None) -> float:
    """One optimiser step on a batch: bag loss plus the edge-aware smoothness term (and, with a
    ``training.domain.DomainAdversary``, its loss on the batch and unlabelled crops; with
    ``extra``, a function of the model's output, that term too); returns the loss."""
    n = x.shape[0]
    features = {}
    if domain is not None:
        x_all = torch.cat([x, domain.draw().to(x.device)])
        hook = model.backbone.register_forward_hook(lambda _m, _i, out: features.__setitem__("f", out))
        try:
            output = model(x_all)
        finally:
            hook.remove()
    else:
        output = model(x)
    loss = bag_loss(output.probabilities[:n], y)
    if smoothness:
        loss = loss + smoothness * edge_aware_smoothness(output.class_maps[:n], x, stride=model.config.output_stride,
                                                         sigma=smoothness_sigma)
    if domain is not None:
        loss = loss + domain.loss(features["f"], n, progress, targets=y, probabilities=output.probabilities)
    if extra is not None:
        loss = loss + extra(output)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda given but no CUDA device is available")
    return torch.device(name)


def _split(samples, cfg: TrainConfig):
    """Train and validation samples: from --val, the manifest's split column, or a grouped hold-out."""
    if any(s.split for s in samples):
        return [s for s in samples if s.split == "train"], [s for s in samples if s.split == "val"]
    keys = sorted({s.group or s.name for s in samples})
    rng = np.random.default_rng(cfg.seed)
    n_val = max(1, int(round(cfg.val_fraction * len(keys))))
    val_keys = set(rng.permutation(keys)[:n_val].tolist())
    return [s for s in samples if (s.group or s.name) not in val_keys], [s for s in samples if (s.group or s.name) in val_keys]


def evaluate_loss_accuracy(model: MILCNN, images: ImageSet, device: torch.device) -> tuple[float, float]:
    from .scoring import predict_set

    probs, _ = predict_set(model, images, device=device)
    loss = float(bag_loss(torch.from_numpy(probs), torch.from_numpy(images.targets)))
    return loss, image_accuracy(probs, images.targets, multi_label=model.config.multi_label)


def train(cfg: TrainConfig, *, resume: str | None = None, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run training; returns the path of the best checkpoint.

    Args:
        cfg: the settings.
        resume: a ``last.pt`` to continue from (same settings).
        progress: show a progress bar.
        stop_after: end this call after that many epochs in total, as if interrupted
            (for time-sliced jobs); resume later with ``resume``.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    channels = tuple(c.strip() for c in cfg.channels.split(",")) if cfg.channels else None
    samples, channels, classes = read_manifest(cfg.data, channels=channels)
    if cfg.val:
        train_samples = [s for s in samples if s.split in (None, "train")]
        val_samples, _, _ = read_manifest(cfg.val, channels=channels, classes=classes)
        val_samples = [s for s in val_samples if s.split in (None, "val")]
    else:
        train_samples, val_samples = _split(samples, cfg)
    if not train_samples or not val_samples:
        raise ValueError(f"need training and validation images, got {len(train_samples)} and {len(val_samples)}")
    multi = cfg.multi_label or any(len(s.labels) > 1 for s in samples)
    model_cfg = ModelConfig(
        channels=channels, classes=classes, pooling=cfg.pooling, pooling_params=cfg.pooling_params,
        multi_label=multi, width=cfg.width, output_stride=cfg.output_stride, context=cfg.context,
        normalization=NormalizationConfig(high=cfg.norm_high), pixel_size=cfg.pixel_size, cell_diameter=cfg.cell_diameter,
    )
    if cfg.crop % model_cfg.output_stride or cfg.crop < model_cfg.min_size:
        raise ValueError(f"--crop {cfg.crop} must be a multiple of {model_cfg.output_stride} and >= {model_cfg.min_size}")

    torch.manual_seed(cfg.seed)
    model = MILCNN(model_cfg).to(device)
    domain = _domain_adversary(cfg, model, photometric=Photometric() if cfg.photometric else None)
    if domain is not None:
        domain.to(device)
    params = list(model.parameters()) + (list(domain.parameters()) if domain is not None else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    warmup = min(100, total_steps // 10)
    scheduler = warmup_cosine(optimizer, total_steps, warmup)
    state = FitState()
    if resume or cfg.init:
        ckpt = read_checkpoint(resume or cfg.init)
        if ModelConfig.from_dict(ckpt["model_config"]).to_dict() != model_cfg.to_dict():
            raise ValueError(f"{resume or '--init ' + cfg.init}: its model settings differ from this run's"
                             + ("; resume with the same settings" if resume else ""))
        model.load_state_dict(ckpt["model"])
        if domain is not None and "domain" in ckpt:  # merged: a run from before the class-mix estimate keeps the uniform one
            domain.load_state_dict({**domain.state_dict(), **ckpt["domain"]})
    if resume:
        state = resume_state(ckpt, model, optimizer, scheduler)
    elif cfg.init:
        log.info("starting from the weights of %s (epoch %d of its run)", cfg.init, ckpt["epoch"] + 1)

    (out / "model_config.json").write_text(model_cfg.to_json())
    with write_atomic(out / "train_config.json", "w") as fh:
        json.dump(asdict(cfg), fh, indent=2)
    t0 = time.time()
    train_set = ImageSet(train_samples, channels, classes, model_cfg.normalization)
    val_set = ImageSet(val_samples, channels, classes, model_cfg.normalization)
    crops = CropDataset(train_set, cfg.crop, seed=cfg.seed, photometric=Photometric() if cfg.photometric else None,
                        scale_jitter=cfg.scale_jitter, mosaic=_cell_mosaic(cfg, channels))
    weights = torch.from_numpy(balanced_weights(train_set.targets))
    log.info("%d training and %d validation images loaded in %.1f s; %d classes, channels %s, device %s",
             len(train_set), len(val_set), time.time() - t0, len(classes), ", ".join(channels), device)

    from tqdm import tqdm

    def run_epoch(epoch: int) -> dict:
        crops.reseed(epoch)
        if domain is not None:
            domain.reseed(epoch)
        sampler = WeightedRandomSampler(weights, cfg.steps_per_epoch * cfg.batch_size, replacement=True,
                                        generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        loader = DataLoader(crops, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
        running = 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False, file=sys.stderr)
        for step, (x, y) in enumerate(bar):
            running += train_step(model, x.to(device), y.to(device), optimizer, scheduler,
                                  smoothness=cfg.smoothness, smoothness_sigma=cfg.smoothness_sigma, domain=domain,
                                  progress=(epoch * cfg.steps_per_epoch + step) / total_steps)
            bar.set_postfix(loss=f"{running / (step + 1):.4f}")
        return {"train_loss": running / cfg.steps_per_epoch}

    def checkpoint() -> dict:
        return {"model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
                **({"domain": domain.state_dict()} if domain is not None else {})}

    return fit(model, optimizer, scheduler, out=out, epochs=cfg.epochs, state=state, run_epoch=run_epoch,
               validate=lambda: evaluate_loss_accuracy(model, val_set, device), checkpoint=checkpoint,
               stop_after=stop_after, keep_epochs=cfg.keep_epochs)


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--pooling-param expects KEY=VALUE, got {item!r}")
        params[key] = float(value)
    return params


def _domain_adversary(cfg: TrainConfig, model: MILCNN, *, photometric):
    if not cfg.domain_data:
        return None
    from milcnn.process.scale import zoom_factor
    from .domain import DomainAdversary, load_unlabelled

    mc = model.config
    if cfg.domain_cell_diameter is not None and not cfg.cell_diameter:
        raise ValueError("--domain-cell-diameter needs --cell-diameter (the training images' cell size)")
    try:  # the SDK's one definition of the zoom, which also refuses non-positive diameters
        zoom = zoom_factor(cell_diameter=cfg.domain_cell_diameter, model_cell_diameter=cfg.cell_diameter)
    except ValueError as exc:
        raise ValueError(f"--domain-cell-diameter: {exc}") from None
    images = load_unlabelled(cfg.domain_data, mc.channels, len(mc.classes), mc.normalization, zoom=zoom)
    log.info("domain-adversarial training on %d unlabelled images of %s (zoom %.3g), weight %g",
             len(images), cfg.domain_data, zoom, cfg.domain_weight)
    return DomainAdversary(model.feature_channels, images, crop=cfg.crop, batch=cfg.domain_batch,
                           weight=cfg.domain_weight, seed=cfg.seed, photometric=photometric,
                           n_classes=len(mc.classes), class_weighting=cfg.domain_class_weighting)


def _cell_mosaic(cfg: TrainConfig, channels: tuple[str, ...]) -> CellMosaic | None:
    if not cfg.cell_mosaic:
        return None
    if cfg.cell_diameter is None:
        raise ValueError("cell_mosaic needs cell_diameter (the training images' cell diameter in px)")
    name = cfg.mosaic_channel or channels[0]
    if name not in channels:
        raise ValueError(f"mosaic_channel {name!r} is not one of the channels {', '.join(channels)}")
    return CellMosaic(p=cfg.cell_mosaic, channel=channels.index(name), cell_diameter=cfg.cell_diameter)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("train"), description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="JSON file of settings (flags override it)")
    parser.add_argument("--resume", help="continue from this last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--pooling-param", action="append", default=None, metavar="KEY=VALUE",
                        help="pooling option, e.g. a=10 (Noisy-AND), r=5 (lse, gm); repeatable")
    add_options(parser, TrainConfig, skip=("pooling_params",))
    args = parser.parse_args(argv)
    log_to_stderr()
    settings = settings_from_args(TrainConfig, args, json.loads(args.config.read_text()) if args.config else {})
    if args.pooling_param is not None:
        settings["pooling_params"] = _parse_params(args.pooling_param)
    elif "pooling" in settings and settings["pooling"] != "noisy_and" and "pooling_params" not in settings:
        settings["pooling_params"] = {}
    unknown = set(settings) - {f.name for f in fields(TrainConfig)}
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(sorted(unknown))} in {args.config}")
    cfg = TrainConfig(**settings)
    if not cfg.data:
        parser.error("--data MANIFEST is required")
    try:
        best = train(cfg, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty())
    except (ValueError, FileNotFoundError) as exc:  # bad manifests, settings, data: one clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
