"""Domain-adversarial training on unlabelled images of the screen a model is for (DANN: Ganin et al.,
"Domain-adversarial training of neural networks", JMLR 2016).

A small head reads the backbone's instance features through a gradient-reversal layer and learns
to tell simulated crops from crops of the unlabelled real images; the backbone learns to make
them alike while the MIL head learns the classes from the simulated labels alone. No real label
is read: ``--domain-data`` is a folder of images.

Usage::

    python -m training.domain mosaics --set bbbc021-cells --half validation --out data/bbbc021-unlabelled
    python -m training.train ... --domain-data data/bbbc021-unlabelled --domain-cell-diameter 89

``mosaics`` writes the cells of a real set's fields (``training/data/real.py``) as images of
shuffled k x k cells of one field each, *without* their labels, for sets stored as single-cell crops.

``pseudo-labels`` writes the same kind of mosaics for self-training, each labelled with a model's own
call on its whole field (all of the field's cells in one image, as a screen's field is called), never
with the set's labels; it uses only what every screen knows, that the cells of one field share one
treatment. ``training.finetune`` then teaches the model to give each small group of a field's cells
its field's call (with rehearsal of simulated images of every class)::

    python -m training.domain pseudo-labels --set bbbc021-cells --half validation --model runs/mcf7-moa/model \
        --out data/bbbc021-pseudo-val
    python -m training.finetune --from runs/mcf7-moa/best.pt --data data/bbbc021-pseudo-val/manifest.csv ...
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from milcnn.process.preprocess import NormalizationConfig, to_chw

__all__ = ["DomainAdversary", "GradientReversal", "domain_weight_schedule", "load_unlabelled", "write_unlabelled_mosaics",
           "write_pseudo_labelled_mosaics"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def domain_weight_schedule(progress: float) -> float:
    """DANN's ramp of the reversal strength, 0 at the start to about 1 at the end: ``2 / (1 + e^(-10 p)) - 1``."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class _Unlabelled:
    """Normalised unlabelled images as ``CropDataset`` reads them (targets are zeros and never used)."""

    def __init__(self, images: list[np.ndarray], n_classes: int):
        self.images = images
        self.targets = np.zeros((len(images), n_classes), np.float32)

    def __len__(self) -> int:
        return len(self.images)


def load_unlabelled(folder, channels: tuple[str, ...], n_classes: int, normalization: NormalizationConfig, *,
                    zoom: float = 1.0) -> _Unlabelled:
    """The TIFF images of ``folder`` (each with the model's channels, in order), pre-processed as for
    training and resized by ``zoom`` to the training images' scale.

    Raises:
        FileNotFoundError: no such folder, or no ``.tif``/``.tiff`` in it.
        ValueError: an image without the model's channel count (the message names the file).
    """
    from milcnn.io.images import read_image
    from .data.dataset import prepared_image

    folder = Path(folder)
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".tif", ".tiff")) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"--domain-data {folder}: no such folder of .tif images")
    images = []
    for p in paths:
        try:
            chw = to_chw(read_image(p), len(channels), channel_names=channels)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None
        images.append(prepared_image(chw, normalization, zoom))
    return _Unlabelled(images, n_classes)


class DomainAdversary(nn.Module):
    """The domain head and the unlabelled crops it is fed.

    Each training step adds ``batch`` crops of the unlabelled images to the labelled batch (one
    forward pass, so batch-norm statistics mix both, as at inference they must serve both); the
    head (two 1x1 convolutions) classifies every instance's features as simulated or real, and
    its loss, scaled by ``weight``, goes back through a gradient reversal whose strength ramps up
    with training progress (``domain_weight_schedule``).
    """

    def __init__(self, in_features: int, images: _Unlabelled, *, crop: int, batch: int, weight: float, seed: int,
                 photometric=None, n_classes: int | None = None, class_weighting: bool = False):
        super().__init__()
        from .data.dataset import CropDataset

        if batch < 1 or weight <= 0:
            raise ValueError(f"domain batch must be >= 1 and weight > 0, got {batch} and {weight}")
        if class_weighting and not n_classes:
            raise ValueError("class-weighted domain loss needs the number of classes")
        self.head = nn.Sequential(nn.Conv2d(in_features, 32, 1), nn.ReLU(inplace=True), nn.Conv2d(32, 1, 1))
        self.crops = CropDataset(images, crop, seed=seed + 7, photometric=photometric)
        self.batch, self.weight, self.seed = batch, weight, seed
        self.class_weighting = class_weighting
        # the unlabelled images' class mix as the model sees it (a running mean of its predictions);
        # a buffer, so a resumed run continues with it
        self.register_buffer("target_prior", torch.full((n_classes or 1,), 1.0 / (n_classes or 1)))
        self._rng = np.random.default_rng(seed)

    def reseed(self, epoch: int) -> None:
        self.crops.reseed(epoch)
        self._rng = np.random.default_rng([self.seed, epoch, 7])

    def draw(self) -> torch.Tensor:
        """A batch of unlabelled crops (batch, C, crop, crop)."""
        picks = self._rng.integers(0, len(self.crops), self.batch)
        return torch.stack([self.crops[int(i)][0] for i in picks])

    def loss(self, features: torch.Tensor, n_labelled: int, progress: float, *, targets: torch.Tensor | None = None,
             probabilities: torch.Tensor | None = None) -> torch.Tensor:
        """Binary cross-entropy of simulated (the first ``n_labelled``) against real, over every instance.

        With ``class_weighting``, each simulated crop's term is weighted by how common its class is
        among the unlabelled images relative to the labelled batch (importance-weighted DANN,
        Combes et al., NeurIPS 2020), the unlabelled images' class mix estimated from the model's
        own ``probabilities`` on them (B, classes), never from labels: plain DANN would pull the
        features of a screen that shows few classes towards those of all the simulated ones.
        """
        logits = self.head(GradientReversal.apply(features, domain_weight_schedule(progress)))
        target = torch.zeros_like(logits)
        target[n_labelled:] = 1.0
        per_crop = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)  # (B,)
        if self.class_weighting and targets is not None and probabilities is not None:
            per_crop = per_crop * self.crop_weights(targets, probabilities[n_labelled:])
        return self.weight * per_crop.mean()

    @torch.no_grad()
    def crop_weights(self, targets: torch.Tensor, unlabelled_probabilities: torch.Tensor,
                     momentum: float = 0.99) -> torch.Tensor:
        """(n_labelled + n_unlabelled,) weights: simulated crops by their class's estimated share among the
        unlabelled images over its share in the batch (mean 1 over the simulated crops), unlabelled crops 1."""
        p = unlabelled_probabilities.detach().float()
        p = p / p.sum(1, keepdim=True).clamp_min(1e-6)  # (U, K) a class mix per unlabelled crop
        self.target_prior.mul_(momentum).add_((1 - momentum) * p.mean(0))
        share = targets.float() / targets.float().sum(1, keepdim=True).clamp_min(1e-6)  # (n, K)
        source_prior = share.mean(0)
        ratio = torch.where(source_prior > 0, self.target_prior / source_prior.clamp_min(1e-6), torch.zeros_like(source_prior))
        w = share @ ratio  # (n,)
        w = w / w.mean().clamp_min(1e-6)
        return torch.cat([w, torch.ones(len(p), dtype=w.dtype, device=w.device)])


def write_unlabelled_mosaics(set_name: str, out, *, root=None, half: str = "validation", k: int = 5,
                             views: int = 4, seed: int = 0) -> int:
    """Write ``views`` mosaics of ``k x k`` shuffled cells of each field of ``half`` as ``out/*.tif``,
    without labels; returns how many were written."""
    from milcnn.io.images import write_tiff
    from .data.real import REAL_SETS, load_fields, shuffled_mosaics

    rs = REAL_SETS[set_name]
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in load_fields(rs, root):
        if half != "all" and rs.half(f) != half:
            continue
        for m in shuffled_mosaics(f.cells, k, views, rng):
            write_tiff(out / f"{n:05d}.tif", m)  # named by number only: nothing says which field or class
            n += 1
    return n


def write_pseudo_labelled_mosaics(set_name: str, model, out, *, root=None, half: str = "validation", k: int = 4,
                                  views: int = 8, cell_diameter: float | None = None, seed: int = 0) -> dict[str, int]:
    """Self-training data: ``views`` mosaics of ``k x k`` shuffled cells of each field of ``half``, each
    labelled with ``model``'s call on the whole field (``training.data.real.field_mosaic``), as
    ``out/NNNNN.tif`` and ``out/manifest.csv`` (columns path, label, field). The set's own labels are
    never read.

    Args:
        set_name: a real set of ``training.data.real.REAL_SETS`` (stored as single-cell crops).
        model: a ``milcnn.Classifier`` (or a zoo name, Hub repo or model folder).
        cell_diameter: the fields' cell diameter in px for the calls (default: the model's input scale).

    Returns:
        how many fields were called each class.
    """
    from milcnn import Classifier
    from milcnn.io.images import write_atomic, write_tiff
    from .data.real import REAL_SETS, field_mosaic, load_fields, shuffled_mosaics

    clf = model if isinstance(model, Classifier) else Classifier.from_hub(str(model), device="cpu")
    rs = REAL_SETS[set_name]
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, calls = [], {}
    for f in load_fields(rs, root, channels=clf.channels):
        if half != "all" and rs.half(f) != half:
            continue
        call = clf.predict(field_mosaic(f.cells), cell_diameter=cell_diameter).top
        calls[call] = calls.get(call, 0) + 1
        for m in shuffled_mosaics(f.cells, k, views, rng):
            name = f"{len(rows):05d}.tif"
            write_tiff(out / name, m)
            rows.append((name, call, f.path.name))
    with write_atomic(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "field"])
        writer.writerows(rows)
    return calls


def main(argv: list[str] | None = None) -> int:
    from .data.real import REAL_SETS, RealDataMissingError

    parser = argparse.ArgumentParser(prog="python -m training.domain", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mosaics", help="write a real set's cells as unlabelled mosaics")
    m.add_argument("--set", required=True, choices=sorted(REAL_SETS))
    m.add_argument("--half", choices=("validation", "test", "all"), default="validation")
    m.add_argument("--data", type=Path, default=None, help="the real labelled data folder (default ../shared/...)")
    m.add_argument("--k", type=int, default=5)
    m.add_argument("--views", type=int, default=4, help="mosaics per field, each a new shuffle")
    m.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("pseudo-labels", help="write a real set's cells as mosaics labelled with a model's own "
                                             "whole-field calls (self-training data)")
    p.add_argument("--set", required=True, choices=sorted(REAL_SETS))
    p.add_argument("--model", required=True, help="zoo name, Hub repo or model folder that calls the fields")
    p.add_argument("--half", choices=("validation", "test", "all"), default="validation")
    p.add_argument("--data", type=Path, default=None, help="the real labelled data folder (default ../shared/...)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--views", type=int, default=8, help="mosaics per field, each a new shuffle")
    p.add_argument("--cell-diameter", type=float, default=None,
                   help="the fields' cell diameter in px for the calls (default: the model's input scale)")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from milcnn.errors import MilcnnError
    from milcnn.logs import log_to_stderr

    log_to_stderr()
    try:
        if args.command == "mosaics":
            n = write_unlabelled_mosaics(args.set, args.out, root=args.data, half=args.half, k=args.k,
                                         views=args.views)
            print(f"wrote {n} unlabelled mosaics to {args.out}")
        else:
            calls = write_pseudo_labelled_mosaics(args.set, args.model, args.out, root=args.data, half=args.half,
                                                  k=args.k, views=args.views, cell_diameter=args.cell_diameter)
            print(f"wrote {args.views} mosaics per field of {sum(calls.values())} fields to {args.out}/manifest.csv; "
                  "fields called " + ", ".join(f"{c} {n}" for c, n in sorted(calls.items())))
    except (RealDataMissingError, MilcnnError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
