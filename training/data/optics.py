"""Image formation for simulated fluorescence microscopy: illumination, optics and camera.

A simulator renders each channel as an expected photon density (photons per pixel before
the optics). ``form_image`` turns it into what a widefield camera records:

1. uneven illumination: a smooth multiplicative field (vignetting plus a tilt);
2. optical blur: a Gaussian approximation of the in-focus point-spread function;
3. shot noise: Poisson counts of the blurred photons plus a uniform background;
4. the camera: gain (ADU per photon), Gaussian read noise and a constant offset,
   clipped to the 16-bit range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Camera", "illumination_field", "form_image"]


@dataclass(frozen=True)
class Camera:
    """An sCMOS-like camera. Defaults follow common 16-bit widefield HCS cameras."""

    offset: float = 100.0  # ADU added to every pixel (the camera's bias)
    gain: float = 1.6  # ADU per photo-electron
    read_noise: float = 2.5  # ADU, Gaussian
    max_value: int = 65535


def illumination_field(shape: tuple[int, int], rng: np.random.Generator, *, strength: float) -> np.ndarray:
    """A smooth field in (1 - strength, 1]: radial vignetting around an off-centre optical axis plus a tilt."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy = h * rng.uniform(0.3, 0.7)
    cx = w * rng.uniform(0.3, 0.7)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float(max(h, w) ** 2)
    tilt_angle = rng.uniform(0, 2 * np.pi)
    tilt = (np.cos(tilt_angle) * (yy / h - 0.5) + np.sin(tilt_angle) * (xx / w - 0.5)) * 0.3
    field = 1.0 - strength * (r2 / r2.max() * 0.8 + (tilt - tilt.min()) / max(np.ptp(tilt), 1e-6) * 0.2)
    return field.astype(np.float32)


def form_image(
    photons: np.ndarray,
    rng: np.random.Generator,
    *,
    background: float,
    blur_sigma: float,
    illumination: np.ndarray,
    camera: Camera = Camera(),
) -> np.ndarray:
    """Turn an expected photon density (H, W) into a uint16 camera image (H, W)."""
    blurred = ndimage.gaussian_filter(photons.astype(np.float32), blur_sigma, mode="reflect")
    expected = (blurred + background) * illumination
    electrons = rng.poisson(np.clip(expected, 0, None)).astype(np.float32)
    adu = camera.offset + camera.gain * electrons + rng.normal(0.0, camera.read_noise, size=electrons.shape)
    return np.clip(np.rint(adu), 0, camera.max_value).astype(np.uint16)
