"""Torch datasets over manifest samples: normalised once, held in memory, cropped and augmented."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from milcnn.preprocess import NormalizationConfig, normalize
from training.data.manifest import Sample, load_image

__all__ = ["ImageSet", "CropDataset", "label_vector", "balanced_weights"]


def label_vector(labels: tuple[str, ...], classes: tuple[str, ...]) -> np.ndarray:
    v = np.zeros(len(classes), dtype=np.float32)
    for lab in labels:
        v[classes.index(lab)] = 1.0
    return v


class ImageSet:
    """Samples' images normalised with the model's definition, kept as float16 (C, H, W)."""

    def __init__(self, samples: list[Sample], channels: tuple[str, ...], classes: tuple[str, ...],
                 normalization: NormalizationConfig):
        self.samples = samples
        self.images = [normalize(load_image(s, len(channels)), normalization).astype(np.float16) for s in samples]
        self.targets = np.stack([label_vector(s.labels, classes) for s in samples])

    def __len__(self) -> int:
        return len(self.samples)


class CropDataset(Dataset):
    """Random ``crop`` x ``crop`` windows with random flips and 90-degree rotations.

    Randomness comes from ``reseed(epoch)``, so an epoch's crops depend only on
    ``(seed, epoch)``: a resumed run sees the same crops as an uninterrupted one.
    """

    def __init__(self, images: ImageSet, crop: int, *, seed: int):
        self.images = images
        self.crop = crop
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def reseed(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = self.images.images[index]
        c, h, w = img.shape
        s = self.crop
        if h < s or w < s:  # small images: pad with background (zero after normalisation)
            img = np.pad(img, ((0, 0), (0, max(0, s - h)), (0, max(0, s - w))))
            h, w = img.shape[1:]
        y = self.rng.integers(0, h - s + 1)
        x = self.rng.integers(0, w - s + 1)
        patch = img[:, y : y + s, x : x + s]
        if self.rng.random() < 0.5:
            patch = patch[:, :, ::-1]
        patch = np.rot90(patch, k=int(self.rng.integers(4)), axes=(1, 2))
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)), torch.from_numpy(self.images.targets[index])


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-sample weights so each label combination is drawn equally often."""
    keys = [tuple(row) for row in targets.astype(np.int8)]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return np.array([1.0 / counts[k] for k in keys], dtype=np.float64)
