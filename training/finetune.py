"""Fine-tune a zoo model (or any exported model or checkpoint) on a few labelled images of your screen.

Usage::

    python -m training.finetune --from yeast-loc --data manifest.csv --out runs/my-screen
    python -m training.finetune --from yeast-loc --data manifest.csv --out runs/my-screen --cell-diameter 42
    python -m training.export runs/my-screen/best.pt --out models/my-screen
    milzoo predict new-plate/ --model models/my-screen

``--from`` takes a zoo name, a Hub repo, a model folder (the PyTorch model is rebuilt from its
``model.onnx``, whose batch norms are folded into the convolutions) or a training checkpoint.
The manifest has the format of ``training/data/manifest.py``; its labels must be classes of
the model (``a|b`` where an image shows two). Images are pre-processed exactly as the SDK
does (``milcnn.process.preprocess``; with ``--pixel-size`` / ``--cell-diameter`` resized to the
model's scale, ``milcnn.process.scale``) and augmented as in training (random crops, flips, 90-degree
rotations).

Rehearsal: half of every batch (``--rehearsal-fraction``) comes from simulated images of
*every* class of the model (``--rehearsal N`` images from the simulator the model was trained
on, made once into ``OUT/rehearsal``, or ``--rehearsal-data`` a manifest of your own), so the
classes your images do not show are not forgotten. With ``--distillation w`` > 0 rehearsal
crops also carry the loss ``w * BCE(maps, starting model's maps)`` over their instances
(learning without forgetting, Li & Hoiem 2016, at the instance level): the model is held to
what it said about every cell of a simulated image, not only to the image's label. Batch-norm
statistics stay frozen (a few fields are too few to re-estimate them); every weight is trained,
at a lower rate than from scratch. ``OUT`` gets ``best.pt`` and ``last.pt`` in the format of ``training/train.py``
(``--resume OUT/last.pt`` continues), ``finetune_config.json`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler

from milcnn.model.config import read_config
from milcnn.errors import MilcnnError
from milcnn.io.images import write_atomic
from milcnn.logs import log_to_stderr
from .data.dataset import CropDataset, ImageSet, Photometric, balanced_weights
from .data.manifest import read_manifest
from .model import MILCNN, ModelConfig
from .checkpoint import load_checkpoint, read_checkpoint
from .fit import FitState, fit, resume_state
from .options import add_options, settings_from_args, prog
from .train import evaluate_loss_accuracy, train_step, warmup_cosine

__all__ = ["FinetuneConfig", "finetune", "load_source", "model_from_onnx", "rehearsal_set", "simulator_of"]

log = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    source: str = "yeast-loc"  # --from: zoo name, Hub repo, model folder or checkpoint
    data: str = ""  # the manifest of the new screen's labelled images
    out: str = "runs/finetune"  # the run folder
    val: str | None = None  # a validation manifest; without one the last step's model is best.pt
    pixel_size: float | None = None  # um per pixel of the manifest's images (resized to the model's)
    cell_diameter: float | None = None  # or their typical cell diameter in px
    steps: int = 60  # optimizer steps in all
    steps_per_epoch: int = 20  # a checkpoint (and validation) every this many steps
    batch_size: int = 16  # crops per batch
    crop: int = 128  # training crop size in px (a multiple of the model's output stride)
    lr: float = 5e-4  # AdamW learning rate (warm-up, then cosine decay)
    weight_decay: float = 1e-4  # AdamW weight decay
    smoothness: float = 2.0  # weight of the edge-aware smoothness of class maps
    smoothness_sigma: float = 0.1  # the image-edge contrast at which the smoothness weight halves
    photometric: bool = True  # intensity augmentations (training.data.dataset.Photometric), on every crop
    rehearsal: int = 44  # simulated images of every class (0: none)
    rehearsal_data: str | None = None  # a manifest to rehearse instead of simulating
    rehearsal_fraction: float = 0.5  # share of each batch drawn from the rehearsal images
    distillation: float = 0.0  # weight of holding rehearsal crops' maps to the starting model's
    seed: int = 0  # seed of the crops and sampling
    threads: int = 0  # CPU threads (0: all cores)


# ------------------------------------------------------------------------------ the starting model

def model_from_onnx(folder) -> MILCNN:
    """Rebuild the PyTorch MIL-CNN of an exported model folder from its ``model.onnx``.

    The export folds each batch norm into its convolution (weight scaled, bias added); the
    rebuilt model carries the folded weights and batch norms that add the bias (unit scale,
    zero mean, variance ``1 - eps``), so in eval mode it computes what ``model.onnx`` does
    (checked on a random image). Noisy-AND thresholds come from ``config.json``.

    Raises:
        ValueError: the folder's graph does not match the architecture its config describes.
    """
    import onnx
    from onnx import numpy_helper

    from milcnn.model.config import ModelInfo

    folder = Path(folder)
    info = ModelInfo.from_file(folder / "config.json")
    arch = info.architecture
    pooling = info.pooling or {"name": "noisy_and", "params": {"a": 10.0}}
    cfg = ModelConfig(channels=info.channels, classes=info.classes, pooling=pooling.get("name", "noisy_and"),
                      pooling_params=dict(pooling.get("params", {})), multi_label=info.multi_label,
                      width=int(arch.get("width", 24)), output_stride=info.output_stride,
                      context=int(arch.get("context", 1)), normalization=info.normalization, min_size=info.min_size,
                      pixel_size=info.pixel_size, cell_diameter=info.cell_diameter,
                      input_cell_diameter=info.input_cell_diameter)
    model = MILCNN(cfg)
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in onnx.load(str(folder / "model.onnx")).graph.initializer}
    state = model.state_dict()
    new = {}
    modules = dict(model.named_modules())
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "backbone" and parts[2] == "1":  # the batch norm of conv block backbone.<i>
            conv = f"backbone.{parts[1]}.0.weight"
            bias = weights.get(conv + "_bias")
            if bias is None:
                raise ValueError(f"{folder}/model.onnx has no folded bias for {conv}; not a milcnn export")
            eps = modules[key.rsplit(".", 1)[0]].eps
            new[key] = {"weight": torch.ones_like(value), "bias": bias, "running_mean": torch.zeros_like(value),
                        "running_var": torch.full_like(value, 1.0 - eps)}.get(parts[3], value)
        elif key == "pooling.b_logit":
            b = torch.tensor(pooling.get("learned_b") or [], dtype=value.dtype)
            if b.shape != value.shape:
                raise ValueError(f"{folder}/config.json: pooling.learned_b should hold {value.numel()} values")
            new[key] = torch.logit(b.clamp(1e-6, 1 - 1e-6))
        elif key in weights:
            new[key] = weights[key].reshape(value.shape).to(value.dtype)
        else:
            raise ValueError(f"{folder}/model.onnx has no weight {key!r}; fine-tune from the training checkpoint")
    model.load_state_dict(new)
    model.eval()
    _check_against_onnx(model, folder / "model.onnx")
    return model


def _check_against_onnx(model: MILCNN, path: Path, *, tolerance: float = 1e-4) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, len(model.config.channels), 96, 128), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    diff = max(float(np.abs(got.probabilities.numpy() - expected[0]).max()),
               float(np.abs(got.class_maps.numpy() - expected[1]).max()))
    if diff > tolerance:
        raise ValueError(f"{path}: the rebuilt PyTorch model differs from the ONNX graph by {diff:.2e}")


def load_source(spec: str) -> tuple[MILCNN, dict]:
    """The model to start from and where it came from.

    Args:
        spec: a checkpoint (``.pt``), a model folder, a zoo name or a Hub repo (``org/name[@rev]``).

    Returns:
        (model in eval mode, ``{"source", "kind", "training_data", "train_config"}``).
    """
    path = Path(spec)
    if path.suffix == ".pt":
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        model, ckpt = load_checkpoint(path)
        return model, {"source": spec, "kind": "checkpoint", "training_data": {},
                       "train_config": ckpt.get("train_config", {})}
    from milcnn.model.hub import resolve

    name, _, revision = spec.partition("@")
    folder = resolve(name, revision=revision or None).folder
    model = model_from_onnx(folder)
    config = read_config(folder)
    return model, {"source": spec, "kind": "model folder", "folder": str(folder), "name": config.get("name"),
                   "version": config.get("version"), "training_data": config.get("training_data", {}),
                   "train_config": config.get("training", {}).get("train_config", {})}


def simulator_of(origin: dict, classes: tuple[str, ...]) -> str:
    """The simulator (``training.simulate`` name) that draws exactly ``classes``, for rehearsal."""
    from .simulate import SIMULATORS

    for kind, (sim_classes, _, _) in SIMULATORS.items():
        if tuple(sim_classes) == tuple(classes):
            return kind
    raise ValueError(f"no simulator draws the classes of {origin['source']}; pass --rehearsal-data MANIFEST "
                     "(images of its classes) or --rehearsal 0")


def _rehearsal_manifest(cfg: FinetuneConfig, origin: dict, model_cfg: ModelConfig) -> str | None:
    if cfg.rehearsal_data:
        return cfg.rehearsal_data
    if cfg.rehearsal <= 0:
        return None
    kind = simulator_of(origin, model_cfg.classes)
    return str(rehearsal_set(kind, cfg.rehearsal, seed=1000 + cfg.seed, channels=model_cfg.channels,
                             folder=Path(cfg.out) / "rehearsal"))


def rehearsal_set(kind: str, n: int, *, seed: int, channels: tuple[str, ...], folder: Path) -> Path:
    """The manifest of ``n`` simulated rehearsal images in ``folder``, simulated unless the folder
    already holds the same set (same simulator code and settings, seed, size and channels)."""
    from .simulate import SIMULATORS, simulate_dataset, simulator_fingerprint

    folder = Path(folder)
    manifest = folder / "manifest.csv"
    stamp = folder / "settings.json"
    params = SIMULATORS[kind][1](channels=tuple(channels))
    settings = {"kind": kind, "n": n, "seed": seed, "channels": list(channels),
                "simulator": simulator_fingerprint(kind, params)}
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return manifest
    t0 = time.time()
    simulate_dataset(kind, n=n, seed=seed, out=folder, params=params, workers=2)
    stamp.write_text(json.dumps(settings))
    log.info("simulated %d rehearsal images (%s) in %.0f s", n, kind, time.time() - t0)
    return manifest


# ------------------------------------------------------------------------------ fine-tuning

class _Tagged(Dataset):
    """A crop dataset whose items also say whether they are rehearsal crops."""

    def __init__(self, crops: CropDataset, rehearsal: bool):
        self.crops, self.rehearsal = crops, rehearsal

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int):
        return (*self.crops[index], self.rehearsal)


def _distillation_loss(teacher: MILCNN | None, x: torch.Tensor, rehearsed: torch.Tensor, weight: float):
    """The loss term (a function of the model's output, for ``train_step``) that holds the class
    maps of the rehearsal crops of ``x`` to the starting model's; None when there is nothing to hold."""
    if teacher is None or not weight or not rehearsed.any():
        return None
    with torch.no_grad():
        target = teacher(x[rehearsed]).class_maps  # (R, K, h, w)

    def loss(output) -> torch.Tensor:
        maps = output.class_maps[rehearsed].clamp(1e-6, 1 - 1e-6)
        return weight * torch.nn.functional.binary_cross_entropy(maps, target)

    return loss


def _freeze_batch_norm(model: MILCNN) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def finetune(cfg: FinetuneConfig, *, resume: str | None = None, stop_after: int | None = None) -> Path:
    """Fine-tune ``cfg.source`` on ``cfg.data``; returns the path of the best checkpoint.

    Args:
        cfg: the settings.
        resume: a ``last.pt`` of this run to continue from.
        stop_after: stop after this many epochs in total, as if interrupted.

    Raises:
        ValueError: bad settings, labels the model does not know, or a source that cannot be rebuilt.
        FileNotFoundError: a missing manifest or source.
    """
    from milcnn.process.scale import zoom_factor

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not 0.0 <= cfg.rehearsal_fraction < 1.0:
        raise ValueError(f"rehearsal_fraction must be in [0, 1), got {cfg.rehearsal_fraction}")
    if not 0.0 <= cfg.distillation <= 1.0:
        raise ValueError(f"distillation must be in [0, 1], got {cfg.distillation}")
    if cfg.steps < 1 or cfg.steps_per_epoch < 1:
        raise ValueError(f"steps and steps_per_epoch must be positive, got {cfg.steps} and {cfg.steps_per_epoch}")
    t_start = time.time()
    model, origin = load_source(cfg.source)
    model_cfg = model.config
    zoom = zoom_factor(pixel_size=cfg.pixel_size, cell_diameter=cfg.cell_diameter,
                       model_pixel_size=model_cfg.pixel_size, model_cell_diameter=model_cfg.cell_diameter,
                       model_input_cell_diameter=model_cfg.input_cell_diameter, model_name=cfg.source)
    if cfg.crop % model_cfg.output_stride or cfg.crop < model_cfg.min_size:
        raise ValueError(f"crop {cfg.crop} must be a multiple of {model_cfg.output_stride} and >= {model_cfg.min_size}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    samples, _, _ = read_manifest(cfg.data, channels=model_cfg.channels, classes=model_cfg.classes)
    user = [s for s in samples if s.split in (None, "train")]
    if not user:
        raise ValueError(f"{cfg.data}: no training images (rows with split train or none)")
    user_set = ImageSet(user, model_cfg.channels, model_cfg.classes, model_cfg.normalization, zoom=zoom)
    photometric = Photometric() if cfg.photometric else None
    datasets = [CropDataset(user_set, cfg.crop, seed=cfg.seed, photometric=photometric)]
    user_w = balanced_weights(user_set.targets)
    rehearsal = _rehearsal_manifest(cfg, origin, model_cfg)
    if rehearsal:
        rs, _, _ = read_manifest(rehearsal, channels=model_cfg.channels, classes=model_cfg.classes)
        rehearsal_images = ImageSet(rs, model_cfg.channels, model_cfg.classes, model_cfg.normalization)
        datasets.append(CropDataset(rehearsal_images, cfg.crop, seed=cfg.seed + 1, photometric=photometric))
        reh_w = balanced_weights(rehearsal_images.targets)
        weights = np.concatenate([user_w / user_w.sum() * (1 - cfg.rehearsal_fraction),
                                  reh_w / reh_w.sum() * cfg.rehearsal_fraction])
    else:
        weights = user_w
    val_set = None
    if cfg.val:
        vs, _, _ = read_manifest(cfg.val, channels=model_cfg.channels, classes=model_cfg.classes)
        val_set = ImageSet(vs, model_cfg.channels, model_cfg.classes, model_cfg.normalization, zoom=zoom)
    crops = ConcatDataset([_Tagged(d, i > 0) for i, d in enumerate(datasets)])
    teacher = None
    if rehearsal and cfg.distillation:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    weights_t = torch.from_numpy(np.asarray(weights, dtype=np.float64))

    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(20, cfg.steps // 10)
    scheduler = warmup_cosine(optimizer, cfg.steps, warmup)
    epochs = -(-cfg.steps // cfg.steps_per_epoch)
    state = FitState()
    if resume:
        ckpt = read_checkpoint(resume)
        if ckpt.get("finetune_config") != asdict(cfg):
            raise ValueError(f"{resume}: not a checkpoint of this fine-tuning run (same settings needed)")
        state = resume_state(ckpt, model, optimizer, scheduler)
    with write_atomic(out / "finetune_config.json", "w") as fh:
        json.dump({**asdict(cfg), "origin": {k: v for k, v in origin.items() if k != "train_config"}}, fh, indent=2)
    log.info("%d images to fine-tune on (zoom %.3g), %d rehearsal images; %d steps from %s",
             len(user_set), zoom, len(datasets[1].images) if rehearsal else 0, cfg.steps, cfg.source)

    def run_epoch(epoch: int) -> dict:
        n_steps = min(cfg.steps_per_epoch, cfg.steps - epoch * cfg.steps_per_epoch)
        for d in datasets:
            d.reseed(epoch)
        sampler = WeightedRandomSampler(weights_t, n_steps * cfg.batch_size, replacement=True,
                                        generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        loader = DataLoader(crops, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
        _freeze_batch_norm(model)
        running = 0.0
        for x, y, rehearsed in loader:
            running += train_step(model, x, y, optimizer, scheduler, smoothness=cfg.smoothness,
                                  smoothness_sigma=cfg.smoothness_sigma,
                                  extra=_distillation_loss(teacher, x, rehearsed, cfg.distillation))
        return {"step": epoch * cfg.steps_per_epoch + n_steps, "train_loss": running / n_steps}

    def checkpoint() -> dict:
        return {"model_config": model_cfg.to_dict(), "finetune_config": asdict(cfg),
                "train_config": {**origin.get("train_config", {}), "finetune": asdict(cfg)}}

    validate = None if val_set is None else (lambda: evaluate_loss_accuracy(model, val_set, torch.device("cpu")))
    best = fit(model, optimizer, scheduler, out=out, epochs=epochs, state=state, run_epoch=run_epoch,
               validate=validate, checkpoint=checkpoint, stop_after=stop_after)
    log.info("fine-tuning took %.0f s", time.time() - t_start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("finetune"), description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True,
                        help="zoo name, Hub repo (org/name[@revision]), model folder or checkpoint (.pt)")
    parser.add_argument("--resume", help="continue from this run's last.pt")
    add_options(parser, FinetuneConfig, skip=("source",), required=("data",))
    args = parser.parse_args(argv)
    log_to_stderr()
    cfg = FinetuneConfig(**settings_from_args(FinetuneConfig, args))
    try:
        best = finetune(cfg, resume=args.resume)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # a plain KeyError's str() is its quoted key; milcnn's own (ModelNotFoundError ...) say what is wrong
        plain_key = isinstance(exc, KeyError) and not isinstance(exc, MilcnnError) and exc.args
        print(f"error: {exc.args[0] if plain_key else exc}", file=sys.stderr)
        return 2
    print(best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
