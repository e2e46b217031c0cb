"""Torch datasets over manifest samples: normalised once, held in memory, cropped and augmented."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from milcnn.process.preprocess import NormalizationConfig, normalize
from milcnn.process.scale import resize_chw, zoomed_shape
from ..data.manifest import Sample, load_image

__all__ = ["ImageSet", "CropDataset", "CellMosaic", "Photometric", "label_vector", "balanced_weights",
           "object_centres", "prepared_image"]


def label_vector(labels: tuple[str, ...], classes: tuple[str, ...]) -> np.ndarray:
    v = np.zeros(len(classes), dtype=np.float32)
    for lab in labels:
        v[classes.index(lab)] = 1.0
    return v


class ImageSet:
    """Samples' images normalised with the model's definition, kept as float16 (C, H, W).

    ``zoom`` resizes them after normalising, as the SDK does for ``pixel_size`` / ``cell_diameter``.
    """

    def __init__(self, samples: list[Sample], channels: tuple[str, ...], classes: tuple[str, ...],
                 normalization: NormalizationConfig, *, zoom: float = 1.0):
        self.samples = samples
        self.images = [prepared_image(load_image(s, len(channels)), normalization, zoom) for s in samples]
        self.targets = np.stack([label_vector(s.labels, classes) for s in samples])

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Photometric:
    """Intensity augmentations of a normalised crop, for screens that differ from the training images
    in exposure, stain balance, noise and focus. Each crop draws its own:

    Args:
        gain: each channel is multiplied by ``exp(N(0, gain))`` (stain and exposure ratios).
        field: and by a smooth field ``exp(N(0, field))`` drawn on a 3 x 3 grid over the crop
            (expression that differs from cell to cell, uneven illumination).
        gamma: positive values are raised to ``exp(U(-gamma, gamma))`` (contrast).
        noise: half of the crops get Gaussian noise of sigma ``U(0, noise)`` per channel (a dim
            protein's grain must not read as a pattern).
        blur: a third of the crops are blurred with sigma ``U(0, blur)`` px (focus).
    """

    gain: float = 0.25
    field: float = 0.4
    gamma: float = 0.3
    noise: float = 0.3
    blur: float = 1.5

    def __post_init__(self) -> None:
        for name in ("gain", "field", "gamma", "noise", "blur"):
            value = getattr(self, name)
            if not 0.0 <= value <= {"blur": 5.0}.get(name, 1.0):
                raise ValueError(f"photometric {name} out of range: {value}")

    def __call__(self, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.ndimage import gaussian_filter, zoom

        c, h, w = patch.shape
        x = patch.astype(np.float32) * np.exp(rng.normal(0.0, self.gain, c)).astype(np.float32)[:, None, None]
        if self.field:
            grid = rng.normal(0.0, self.field, (c, 3, 3))
            x *= np.exp(zoom(grid, (1, h / 3, w / 3), order=1, mode="nearest")[:, :h, :w]).astype(np.float32)
        g = np.float32(np.exp(rng.uniform(-self.gamma, self.gamma)))
        x = np.where(x > 0, np.abs(x) ** g, x)
        if self.blur and rng.random() < 1 / 3:
            x = gaussian_filter(x, sigma=(0, *(2 * [rng.uniform(0, self.blur)])))
        if self.noise and rng.random() < 0.5:
            sigma = rng.uniform(0.0, self.noise, c).astype(np.float32)[:, None, None]
            x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
        return x


def object_centres(channel: np.ndarray, *, min_area: int = 20) -> np.ndarray:
    """Centres (y, x) of the bright objects of one normalised channel (nuclei in a DNA stain): Otsu
    threshold of the lightly smoothed channel, connected components of at least ``min_area`` px.
    Returns an (n, 2) int array (n may be 0)."""
    from scipy import ndimage as ndi

    from ..metrics import otsu_threshold

    smooth = ndi.gaussian_filter(channel.astype(np.float32), 1.5)
    labels, n = ndi.label(smooth > otsu_threshold(smooth))
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    index = np.arange(1, n + 1)
    keep = index[ndi.sum_labels(np.ones_like(smooth), labels, index) >= min_area]
    if len(keep) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return np.rint(np.array(ndi.center_of_mass(smooth, labels, keep))).astype(np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class CellMosaic:
    """Training views made of single-cell tiles: with probability ``p`` a crop is replaced by a grid of
    square tiles, each cut around a random object (nucleus) of the same image, as screens that only
    keep per-cell crops and ``benchmarks.realdata``'s mosaics show them. It takes density and the
    arrangement of cells away as cues, so the model calls a bag by what its cells look like.

    Args:
        p: the share of crops made into mosaics.
        channel: the channel whose bright objects centre the tiles (index in the model's channels).
        tile: tile side as a fraction of the cell diameter, drawn uniformly from this range.
        cell_diameter: the cell diameter of the training images in px.
    """

    p: float = 0.5
    channel: int = 0
    tile: tuple[float, float] = (0.6, 1.0)
    cell_diameter: float = 47.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"cell mosaic p must be in [0, 1], got {self.p}")
        lo, hi = self.tile
        if not 0.1 <= lo <= hi <= 3.0:
            raise ValueError(f"cell mosaic tile must be 0.1 <= lo <= hi <= 3 (fractions of the cell diameter), "
                             f"got {self.tile}")
        if self.cell_diameter <= 0:
            raise ValueError(f"cell mosaic cell_diameter must be positive, got {self.cell_diameter}")

    def __call__(self, img: np.ndarray, centres: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        """A ``size`` x ``size`` mosaic of tiles of ``img`` (C, H, W) around ``centres`` (n >= 1, 2)."""
        t = max(4, int(round(rng.uniform(*self.tile) * self.cell_diameter)))
        k = -(-size // t)
        padded = np.pad(img, ((0, 0), (t, t), (t, t)))
        rows = []
        for _ in range(k):
            row = []
            for y, x in centres[rng.integers(0, len(centres), k)]:
                y0, x0 = y + t - t // 2, x + t - t // 2
                row.append(padded[:, y0:y0 + t, x0:x0 + t])
            rows.append(np.concatenate(row, axis=2))
        return np.concatenate(rows, axis=1)[:, :size, :size]


class CropDataset(Dataset):
    """Random ``crop`` x ``crop`` windows with random flips and 90-degree rotations, and
    ``photometric`` intensity augmentations where given.

    ``scale_jitter`` j > 0 also resizes each window by a zoom drawn log-uniformly from
    ``[1 / (1 + j), 1 + j]`` (a window of ``crop / zoom`` px resized to ``crop``): cells of other
    sizes and microscopes of other pixel sizes. ``mosaic`` (a ``CellMosaic``) makes some windows
    grids of single-cell tiles of the same image instead.

    Randomness comes from ``reseed(epoch)``, so an epoch's crops depend only on
    ``(seed, epoch)``: a resumed run sees the same crops as an uninterrupted one.
    """

    def __init__(self, images: ImageSet, crop: int, *, seed: int, photometric: Photometric | None = None,
                 scale_jitter: float = 0.0, mosaic: CellMosaic | None = None):
        if not 0.0 <= scale_jitter <= 1.0:
            raise ValueError(f"scale_jitter must be in [0, 1], got {scale_jitter}")
        self.images = images
        self.crop = crop
        self.scale_jitter = scale_jitter
        self.seed = seed
        self.photometric = photometric
        self.mosaic = mosaic
        self.centres = ([object_centres(im[mosaic.channel]) for im in images.images] if mosaic and mosaic.p
                        else None)
        self.rng = np.random.default_rng(seed)

    def reseed(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img = self.images.images[index]
        s = window = self.crop
        if self.scale_jitter:
            zoom = np.exp(self.rng.uniform(-1, 1) * np.log1p(self.scale_jitter))
            s = max(8, int(round(window / zoom)))
        if self.centres is not None and len(self.centres[index]) and self.rng.random() < self.mosaic.p:
            patch = self.mosaic(img, self.centres[index], s, self.rng)
        else:
            patch = self._window(img, s)
        if s != window:
            patch = resize_chw(patch, (window, window))
        if self.rng.random() < 0.5:
            patch = patch[:, :, ::-1]
        patch = np.rot90(patch, k=int(self.rng.integers(4)), axes=(1, 2))
        if self.photometric is not None:
            patch = self.photometric(patch, self.rng)
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)), torch.from_numpy(self.images.targets[index])

    def _window(self, img: np.ndarray, s: int) -> np.ndarray:
        c, h, w = img.shape
        if h < s or w < s:  # small images: pad with background (zero after normalisation)
            img = np.pad(img, ((0, 0), (0, max(0, s - h)), (0, max(0, s - w))))
            h, w = img.shape[1:]
        y = self.rng.integers(0, h - s + 1)
        x = self.rng.integers(0, w - s + 1)
        return img[:, y : y + s, x : x + s]


def prepared_image(chw: np.ndarray, normalization: NormalizationConfig, zoom: float = 1.0) -> np.ndarray:
    """An image as training and PyTorch evaluation feed it: normalised, resized by ``zoom``, float16."""
    x = normalize(chw, normalization)
    if zoom != 1.0:
        x = resize_chw(x, zoomed_shape(x.shape[1:], zoom))
    return x.astype(np.float16)


def balanced_weights(targets: np.ndarray) -> np.ndarray:
    """Per-sample weights so each label combination is drawn equally often."""
    keys = [tuple(row) for row in targets.astype(np.int8)]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return np.array([1.0 / counts[k] for k in keys], dtype=np.float64)
