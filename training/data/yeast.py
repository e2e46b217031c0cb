"""A yeast GFP-localization screen simulator with pixel-level ground truth.

Modelled on the images of Chong et al. 2015 (Cell 161:1413) and the DeepLoc SWAT classes
(Kraus et al. 2017): budding *S. cerevisiae* imaged in widefield at about 0.17 um per
pixel, a mother cell 4 to 6 um across (24 to 34 px). Channel ``gfp`` carries the tagged
protein's localization, channel ``rfp`` a cytosolic marker that outlines every cell.

Each image shows one protein, so one class; every cell expressing it shows that class's
pattern, with per-cell expression varying log-normally. As in real screens a fraction of
cells shows nothing (not expressing, or too dim), and outliers appear: bright dead cells,
autofluorescent debris, and out-of-focus cells.

Per cell, the simulator builds the compartments a biologist would look for: a nucleus
(off-centre), one to three vacuole lobes (large, usually opposite the nucleus), the
plasma membrane, the cortex, a tubular mitochondrial network at the cortex and, in budded
cells, a daughter bud joined by a neck. Each class lights up the compartment the protein
lives in:

=================  =================================================================
ER                 nuclear envelope ring plus patchy cortical ER under the membrane
bud                the daughter bud (a polarised cortical cap in unbudded cells)
bud_neck           a septin bar across the mother-bud neck (a spot at the incipient site)
cell_periphery     a thin even rim at the plasma membrane, bud included
cytosol            diffuse fill, dark vacuole, slightly dimmer nucleus
mitochondria       3 to 8 tubules along the cortex, avoiding the vacuole
nuclear_periphery  a punctate ring around the nucleus (nuclear pores)
nucleus            a filled round nucleus
punctate           2 to 10 bright diffraction-limited dots (Golgi, endosomes, peroxisomes)
vacuole            the vacuole lumen filled
vacuole_membrane   rings around the vacuole lobes
=================  =================================================================

Ground-truth masks (uint8): 0 background, ``k + 1`` for every pixel of a cell (bud
included) that shows class ``k``'s pattern, 255 for every other object present (cells
not showing it, dead cells, out-of-focus cells, debris).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..data.optics import Camera, form_image, illumination_field

__all__ = ["YEAST_CLASSES", "YEAST_CHANNELS", "YeastParams", "simulate_yeast_image"]

YEAST_CLASSES: tuple[str, ...] = (
    "ER",
    "bud",
    "bud_neck",
    "cell_periphery",
    "cytosol",
    "mitochondria",
    "nuclear_periphery",
    "nucleus",
    "punctate",
    "vacuole",
    "vacuole_membrane",
)
YEAST_CHANNELS: tuple[str, ...] = ("gfp", "rfp")
OTHER_OBJECT = 255
_MARGIN = 48  # px rendered around the field so cells cut by the border keep their membranes


@dataclass(frozen=True)
class YeastParams:
    """Levels of one simulated screen. Ranges are drawn uniformly per image (``photons``
    log-uniformly), so one training set spans many microscopes and strains.

    Attributes:
        size: image height and width in pixels.
        channels: which of ``gfp`` and ``rfp`` to write, in order.
        non_showing: range of the per-image fraction of cells that show no pattern.
        outliers: expected fraction of cells replaced by outliers (dead or out of focus);
            debris particles are added at half this rate per cell.
        coverage: range of the fraction of the field covered by cells (density).
        cell_radius: range of mother-cell radii in pixels (pixel size and strain).
        budded: fraction of cells with a bud.
        blur: range of the in-focus PSF's Gaussian sigma in pixels (objective, focus).
        photons: range of the diffuse GFP level of a typical cell in photons per pixel
            (expression and exposure: the lower, the noisier).
        autofluorescence: range of the cells' own GFP-channel glow, even over the cell, as a
            fraction of that level (it outshines a dim protein's pattern).
        background: range of the medium's glow as a fraction of each channel's level.
        vacuole_contrast: range of how much dimmer the vacuole is than the cytoplasm in
            cytosolic signals (1: black, 0: not at all).
        mito_diffuse: range of the diffuse fill under the mitochondrial tubules, as a fraction of
            the tubules' cell-average level (out-of-focus network and unimported protein).
    """

    size: int = 512
    channels: tuple[str, ...] = YEAST_CHANNELS
    non_showing: tuple[float, float] = (0.2, 0.5)
    outliers: float = 0.05
    coverage: tuple[float, float] = (0.25, 0.55)
    cell_radius: tuple[float, float] = (10.0, 19.0)
    budded: float = 0.55
    blur: tuple[float, float] = (0.9, 2.4)
    photons: tuple[float, float] = (15.0, 400.0)
    autofluorescence: tuple[float, float] = (0.02, 0.2)
    background: tuple[float, float] = (0.08, 0.4)
    vacuole_contrast: tuple[float, float] = (0.3, 1.0)
    mito_diffuse: tuple[float, float] = (0.05, 0.4)

    def __post_init__(self) -> None:
        check_screen_params(self, YEAST_CHANNELS)
        check_ranges(self, {"coverage": (0.02, 0.9), "cell_radius": (4.0, 64.0), "blur": (0.3, 6.0),
                            "photons": (5.0, 1e5), "autofluorescence": (0.0, 2.0), "background": (0.0, 2.0),
                            "vacuole_contrast": (0.0, 1.0), "mito_diffuse": (0.0, 2.0)})
        if not 0.0 <= self.budded <= 1.0:
            raise ValueError(f"budded must be in [0, 1], got {self.budded}")


def check_ranges(params, limits: dict[str, tuple[float, float]]) -> None:
    """Check that each named setting is a (low, high) range with ``limit_lo <= low <= high <= limit_hi``.

    Raises:
        ValueError: naming the setting, its value and the allowed limits.
    """
    for name, (lo_limit, hi_limit) in limits.items():
        value = getattr(params, name)
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a (low, high) range, got {value!r}") from None
        if not lo_limit <= lo <= hi <= hi_limit:
            raise ValueError(f"{name} must be a range within [{lo_limit:g}, {hi_limit:g}] with low <= high, "
                             f"got {value!r}")


def check_screen_params(params, known_channels: tuple[str, ...]) -> None:
    """Validate the settings every simulator shares: channels, size, non_showing, outliers.

    Raises:
        ValueError: naming the bad setting and its value.
    """
    channels = params.channels
    if any(c not in known_channels for c in channels) or not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be distinct names from {known_channels}, got {channels}")
    if params.size < 64:
        raise ValueError(f"size must be at least 64 px, got {params.size}")
    lo, hi = params.non_showing
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"non_showing must be a range within [0, 1], got {params.non_showing}")
    if not 0.0 <= params.outliers <= 1.0:
        raise ValueError(f"outliers must be in [0, 1], got {params.outliers}")


@dataclass
class _Cell:
    cy: float
    cx: float
    a: float  # semi-axis along theta
    b: float  # semi-axis across theta
    theta: float
    bud: tuple[float, float, float, float] | None = None  # (cy, cx, radius, direction)
    kind: str = "normal"  # normal | dead | blurred
    shows: bool = True
    expression: float = 1.0
    marker: float = 1.0

    def radius_along(self, phi: float) -> float:
        t = phi - self.theta
        return 1.0 / np.sqrt((np.cos(t) / self.a) ** 2 + (np.sin(t) / self.b) ** 2)


@dataclass(frozen=True)
class _Look:
    """One image's draw of the per-image appearance settings of ``YeastParams``."""

    autofluorescence: float
    vacuole_contrast: float
    mito_diffuse: float


# --------------------------------------------------------------------------- layout


def _place_cells(rng: np.random.Generator, p: YeastParams, canvas: int) -> list[_Cell]:
    r_lo, r_hi = p.cell_radius
    mean_area = np.pi * ((r_lo + r_hi) / 2) ** 2 * (1 + 0.25 * p.budded)
    n_target = max(1, int(round(rng.uniform(*p.coverage) * p.size**2 / mean_area)))
    n_clusters = max(1, int(round(n_target / rng.uniform(2.0, 6.0))))
    lo, hi = _MARGIN - r_hi, _MARGIN + p.size + r_hi
    clusters = rng.uniform(lo, hi, size=(n_clusters, 2))
    cells: list[_Cell] = []
    centres = np.zeros((0, 2))
    radii = np.zeros(0)
    for _ in range(n_target):
        for _try in range(40):
            r = rng.uniform(r_lo, r_hi)
            if rng.random() < 0.75:  # yeast grow in clumps
                c = clusters[rng.integers(n_clusters)] + rng.normal(0, 2.2 * r_hi, size=2)
            else:
                c = rng.uniform(lo, hi, size=2)
            if not (lo <= c[0] <= hi and lo <= c[1] <= hi):
                continue
            if len(centres):
                dist = np.hypot(*(centres - c).T)
                if np.any(dist < 0.92 * (radii + r)):
                    continue
            break
        else:
            continue
        ecc = rng.uniform(1.0, 1.22)
        cell = _Cell(cy=c[0], cx=c[1], a=r * np.sqrt(ecc), b=r / np.sqrt(ecc), theta=rng.uniform(0, np.pi))
        if rng.random() < p.budded:
            phi = rng.uniform(0, 2 * np.pi)
            rb = r * rng.uniform(0.38, 0.78)
            reach = cell.radius_along(phi) + 0.72 * rb
            cell.bud = (c[0] + reach * np.sin(phi), c[1] + reach * np.cos(phi), rb, phi)
        cells.append(cell)
        centres = np.vstack([centres, c])
        radii = np.append(radii, r)
    return cells


def _bbox(cell: _Cell, canvas: int) -> tuple[slice, slice]:
    ext = max(cell.a, cell.b) + 3
    y0, y1, x0, x1 = cell.cy - ext, cell.cy + ext, cell.cx - ext, cell.cx + ext
    if cell.bud is not None:
        by, bx, rb, _ = cell.bud
        y0, y1 = min(y0, by - rb - 3), max(y1, by + rb + 3)
        x0, x1 = min(x0, bx - rb - 3), max(x1, bx + rb + 3)
    clip = lambda v: int(np.clip(v, 0, canvas))  # noqa: E731
    return slice(clip(np.floor(y0)), clip(np.ceil(y1) + 1)), slice(clip(np.floor(x0)), clip(np.ceil(x1) + 1))


def _depth(cell: _Cell, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed depth inside the cell in px (positive inside) and a bool 'in the bud' map."""
    dy, dx = yy - cell.cy, xx - cell.cx
    c, s = np.cos(cell.theta), np.sin(cell.theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    r_eff = np.sqrt(cell.a * cell.b)
    depth = (1.0 - np.sqrt((u / cell.a) ** 2 + (v / cell.b) ** 2)) * r_eff
    in_bud = np.zeros(depth.shape, dtype=bool)
    if cell.bud is not None:
        by, bx, rb, _ = cell.bud
        bud_depth = (1.0 - np.hypot(yy - by, xx - bx) / rb) * rb
        in_bud = bud_depth > depth
        depth = np.maximum(depth, bud_depth)
    return depth, in_bud


def _ownership(cells: list[_Cell], canvas: int) -> np.ndarray:
    """Which cell owns each pixel (-1 for none). Touching cells share a flattened wall."""
    owner = np.full((canvas, canvas), -1, dtype=np.int32)
    best = np.zeros((canvas, canvas), dtype=np.float32)
    for i, cell in enumerate(cells):
        sy, sx = _bbox(cell, canvas)
        yy, xx = np.mgrid[sy, sx].astype(np.float32)
        depth, _ = _depth(cell, yy, xx)
        win = depth > best[sy, sx]
        owner[sy, sx][win] = i
        best[sy, sx][win] = depth[win]
    return owner


# --------------------------------------------------------------------------- helpers


def _soft_disk(dist: np.ndarray, radius: float, edge: float = 0.5) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(radius - dist) / edge))


def _ring(dist: np.ndarray, radius: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((dist - radius) / width) ** 2)


def _angular_modulation(rng: np.random.Generator, angle: np.ndarray, n_bumps: int, width: float, floor: float):
    """1 - floor ... 1: a random sum of angular bumps, for patchy or punctate rings."""
    mod = np.zeros_like(angle)
    for centre in rng.uniform(0, 2 * np.pi, size=n_bumps):
        d = np.angle(np.exp(1j * (angle - centre)))
        mod += np.exp(-0.5 * (d / width) ** 2) * rng.uniform(0.5, 1.0)
    return floor + (1 - floor) * np.clip(mod, 0, 1)


def _splat(target: np.ndarray, points: np.ndarray, weights: np.ndarray) -> None:
    """Add point weights into ``target`` with bilinear interpolation."""
    if len(points) == 0:
        return
    y, x = points[:, 0], points[:, 1]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    h, w = target.shape
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(target, (yy[ok], xx[ok]), (weights * wt)[ok])


# --------------------------------------------------------------------------- one cell


def _render_cell(
    rng: np.random.Generator,
    i: int,
    cell: _Cell,
    cls: str | None,
    owner: np.ndarray,
    gfp: np.ndarray,
    rfp: np.ndarray,
    points: list,
    look: _Look,
) -> None:
    """Add cell ``i``'s GFP and RFP photon densities into ``gfp`` and ``rfp`` (in place)."""
    sy, sx = _bbox(cell, owner.shape[0])
    inside = owner[sy, sx] == i
    if not inside.any():
        return
    yy, xx = np.mgrid[sy, sx].astype(np.float32)
    _, in_bud = _depth(cell, yy, xx)
    edt = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1].astype(np.float32)
    r = np.sqrt(cell.a * cell.b)
    in_f = inside.astype(np.float32)

    if cell.kind == "dead":  # shrunken, round, uniformly bright and granular
        grain = 1.0 + 0.25 * ndimage.gaussian_filter(rng.normal(size=inside.shape), 1.0)
        body = _soft_disk(np.hypot(yy - cell.cy, xx - cell.cx), 0.8 * r, 0.7) * in_f * grain
        gfp[sy, sx] += body * cell.expression * rng.uniform(2.0, 4.0)
        rfp[sy, sx] += body * cell.marker * rng.uniform(1.5, 3.0)
        return

    # compartments of the mother cell
    psi = rng.uniform(0, 2 * np.pi)  # nucleus direction; vacuole sits opposite
    if cell.bud is not None and rng.random() < 0.5:
        psi = cell.bud[3] + rng.normal(0, 0.5)  # the nucleus moves towards the neck before division
    rn = r * rng.uniform(0.25, 0.3)
    ny, nx = cell.cy + 0.42 * r * np.sin(psi), cell.cx + 0.42 * r * np.cos(psi)
    nuc_dist = np.hypot(yy - ny, xx - nx)
    nuc = _soft_disk(nuc_dist, rn) * in_f

    n_lobes = rng.choice([1, 1, 2, 2, 3])
    vac_r_total = r * rng.uniform(0.4, 0.52)
    reach = 0.86 * r - vac_r_total  # the vacuole fills the side away from the nucleus
    vc = np.array([cell.cy - reach * np.sin(psi), cell.cx - reach * np.cos(psi)])
    lobes = []
    for k in range(n_lobes):
        lr = vac_r_total / n_lobes**0.5 * rng.uniform(0.9, 1.1)
        offset = 0 if n_lobes == 1 else 0.8 * lr
        ang = rng.uniform(0, 2 * np.pi) + 2 * np.pi * k / n_lobes
        lobes.append((vc[0] + offset * np.sin(ang), vc[1] + offset * np.cos(ang), lr))
    lobe_dists = [np.hypot(yy - ly, xx - lx) for ly, lx, _ in lobes]
    vac = np.max([_soft_disk(d, lr) for d, (_, _, lr) in zip(lobe_dists, lobes)], axis=0) * in_f

    cytoplasm = in_f * (1 - look.vacuole_contrast * vac) * (1 - 0.3 * nuc)
    texture = 1.0 + 0.12 * ndimage.gaussian_filter(rng.normal(size=inside.shape), 1.5) / 0.19
    rfp[sy, sx] += cytoplasm * texture * cell.marker

    # every cell autofluoresces in GFP: evenly, a little more in the vacuole
    auto = look.autofluorescence * in_f + 0.05 * vac
    if not cell.shows or cls is None:
        gfp[sy, sx] += auto * cell.expression
        return

    membrane = _ring(edt, 0.7, 0.6) * in_f
    cortex = _ring(edt, 1.6, 0.75) * in_f
    angle = np.arctan2(yy - cell.cy, xx - cell.cx)
    # points for diffraction-limited structures, in canvas coordinates, with weights
    pts: list[np.ndarray] = []
    wts: list[np.ndarray] = []

    def inside_at(p: np.ndarray) -> np.ndarray:
        iy = np.clip(np.rint(p[:, 0]).astype(int) - sy.start, 0, inside.shape[0] - 1)
        ix = np.clip(np.rint(p[:, 1]).astype(int) - sx.start, 0, inside.shape[1] - 1)
        return inside[iy, ix] & (vac[iy, ix] < 0.5)

    if cls == "cytosol":
        pattern = cytoplasm * texture
    elif cls == "nucleus":
        pattern = 1.6 * nuc * (1 + 0.1 * (texture - 1)) + 0.04 * cytoplasm
    elif cls == "nuclear_periphery":
        pores = _angular_modulation(rng, np.arctan2(yy - ny, xx - nx), rng.integers(6, 11), 0.28, 0.35)
        pattern = 1.7 * _ring(nuc_dist, rn, 0.65) * pores * in_f
    elif cls == "ER":
        patches = _angular_modulation(rng, angle, rng.integers(4, 8), 0.45, 0.25)
        pattern = (1.4 * _ring(nuc_dist, rn, 0.7) + 1.5 * cortex * patches) * in_f
        for _ in range(rng.integers(1, 4)):  # thin cytoplasmic strands joining the nuclear and cortical ER
            a0 = psi + rng.normal(0, 1.2)
            t = np.linspace(rn, 0.85 * r, 16)[:, None]
            start = np.array([ny, nx])
            bend = rng.normal(0, 0.3)
            p = start + t * np.stack([np.sin(a0 + bend * t[:, 0] / r), np.cos(a0 + bend * t[:, 0] / r)], 1)
            keep = inside_at(p)
            pts.append(p[keep])
            wts.append(np.full(keep.sum(), 0.9))
    elif cls == "cell_periphery":
        pattern = 1.8 * membrane
    elif cls == "mitochondria":
        pattern = look.mito_diffuse * cytoplasm
        for _ in range(rng.integers(4, 10)):
            # a widefield image projects the whole cortical network: tubules over the cell, most near the rim
            rho = rng.uniform(0.15, 0.85) ** 0.6 * r
            a0 = rng.uniform(0, 2 * np.pi)
            turn = rng.choice([-1, 1])
            heading = a0 + turn * np.pi / 2
            pos = np.array([cell.cy + rho * np.sin(a0), cell.cx + rho * np.cos(a0)])
            track = []
            for _step in range(int(rng.uniform(16, 44))):
                track.append(pos.copy())
                # tubules follow the cortex: steer towards the local tangent, with a wobble
                here = np.arctan2(pos[0] - cell.cy, pos[1] - cell.cx)
                tangent = here + turn * np.pi / 2
                heading += 0.35 * np.angle(np.exp(1j * (tangent - heading))) + rng.normal(0, 0.3)
                pos = pos + 0.5 * np.array([np.sin(heading), np.cos(heading)])
            p = np.array(track)
            keep = inside_at(p)
            pts.append(p[keep])
            wts.append(np.full(keep.sum(), 1.7) * rng.uniform(0.7, 1.2))
        if cell.bud is not None:  # mitochondria are inherited early: a short tubule in the bud
            by, bx, rb, phi = cell.bud
            t = np.linspace(-0.5, 0.5, 12)[:, None] * rb
            p = np.array([by, bx]) + t * np.array([np.cos(phi), -np.sin(phi)])
            keep = inside_at(p)
            pts.append(p[keep])
            wts.append(np.full(keep.sum(), 1.7))
    elif cls == "punctate":
        pattern = 0.05 * cytoplasm
        cand = np.argwhere(inside & (vac < 0.3) & (edt > 1.0)).astype(np.float32)
        if len(cand):
            n = rng.integers(2, 11)
            p = cand[rng.integers(len(cand), size=n)] + rng.uniform(-0.5, 0.5, size=(n, 2))
            pts.append(p + [sy.start, sx.start])
            wts.append(rng.uniform(14, 32, size=n))
    elif cls == "vacuole":
        pattern = 1.2 * vac * (1 + 0.05 * (texture - 1)) + 0.03 * cytoplasm
    elif cls == "vacuole_membrane":
        rings = [_ring(d, lr, 0.6) for d, (_, _, lr) in zip(lobe_dists, lobes)]
        # a lobe's membrane is hidden where it lies inside a neighbouring lobe
        for k, (d_k, (_, _, lr_k)) in enumerate(zip(lobe_dists, lobes)):
            for j, ring in enumerate(rings):
                if j != k:
                    ring *= 1 - _soft_disk(d_k, lr_k - 0.8)
        pattern = 1.7 * np.max(rings, axis=0) * in_f + 0.03 * cytoplasm
    elif cls == "bud":
        if cell.bud is not None:
            by, bx, rb, _ = cell.bud
            bud_region = in_bud.astype(np.float32) * in_f
            tip = _ring(np.hypot(yy - by, xx - bx), 0.0, rb * 0.8)
            pattern = bud_region * (1.2 + 0.6 * tip) * texture + 0.06 * cytoplasm
        else:  # polarised growth at the incipient bud site
            cap_dir = rng.uniform(0, 2 * np.pi)
            d = np.angle(np.exp(1j * (angle - cap_dir)))
            pattern = 1.8 * cortex * np.exp(-0.5 * (d / 0.35) ** 2) + 0.06 * cytoplasm
    elif cls == "bud_neck":
        pattern = 0.04 * cytoplasm
        if cell.bud is not None:
            _, _, rb, phi = cell.bud
            neck = np.array([cell.cy, cell.cx]) + cell.radius_along(phi) * np.array([np.sin(phi), np.cos(phi)])
            half = 0.62 * rb
            t = np.linspace(-half, half, max(4, int(4 * half)))[:, None]
            across = np.array([np.cos(phi), -np.sin(phi)])
            along = np.array([np.sin(phi), np.cos(phi)])
            for shift in (-0.6, 0.6):  # the septin hourglass seen edge-on: a double bar
                p = neck + t * across + shift * along
                keep = inside_at(p)
                pts.append(p[keep])
                wts.append(np.full(keep.sum(), 1.6))
        else:
            site = rng.uniform(0, 2 * np.pi)
            rr = cell.radius_along(site) - 1.8
            p = np.array([[cell.cy + rr * np.sin(site), cell.cx + rr * np.cos(site)]])
            pts.append(p[inside_at(p)])
            wts.append(np.full(len(pts[-1]), 8.0))
    else:
        raise ValueError(f"unknown yeast class {cls!r}")

    gfp[sy, sx] += (pattern + auto) * cell.expression
    if pts:
        points.append((np.concatenate(pts), np.concatenate(wts) * cell.expression))


def _render_debris(rng: np.random.Generator, canvas: int, gfp, rfp, mask_canvas) -> None:
    cy, cx = rng.uniform(_MARGIN, canvas - _MARGIN, size=2)
    blob = np.zeros((15, 15), dtype=np.float32)
    for _ in range(rng.integers(1, 5)):
        y, x = rng.uniform(4.5, 9.5, size=2)
        s = rng.uniform(0.8, 2.0)
        yy, xx = np.mgrid[0:15, 0:15]
        blob += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))
    y0, x0 = int(cy) - 7, int(cx) - 7
    level = rng.uniform(2.0, 8.0)
    gfp[y0 : y0 + 15, x0 : x0 + 15] += blob * level
    rfp[y0 : y0 + 15, x0 : x0 + 15] += blob * level * rng.uniform(0.2, 0.8)
    region = mask_canvas[y0 : y0 + 15, x0 : x0 + 15]
    region[(blob > 0.3) & (region == 0)] = OTHER_OBJECT


# --------------------------------------------------------------------------- one image


def simulate_yeast_image(cls: str, rng: np.random.Generator, params: YeastParams = YeastParams()):
    """Simulate one field of view of a strain whose protein localises to ``cls``.

    Args:
        cls: one of ``YEAST_CLASSES``.
        rng: the random generator (the image is a pure function of its state).
        params: screen-level settings.

    Returns:
        (image, mask): uint16 (C, H, W) camera image with channels ``params.channels``,
        and the uint8 (H, W) ground-truth mask.
    """
    if cls not in YEAST_CLASSES:
        raise ValueError(f"unknown yeast class {cls!r}; choose from {', '.join(YEAST_CLASSES)}")
    k = YEAST_CLASSES.index(cls)
    canvas = params.size + 2 * _MARGIN
    cells = _place_cells(rng, params, canvas)
    non_showing = rng.uniform(*params.non_showing)
    expression = float(np.exp(rng.uniform(*np.log(params.photons))))  # photons per pixel of diffuse GFP
    marker = float(np.exp(rng.uniform(*np.log(params.photons))))  # the RFP marker's, independently
    look = _Look(autofluorescence=rng.uniform(*params.autofluorescence),
                 vacuole_contrast=rng.uniform(*params.vacuole_contrast),
                 mito_diffuse=rng.uniform(*params.mito_diffuse))
    for cell in cells:
        u = rng.random()
        if u < params.outliers / 2:
            cell.kind = "dead"
        elif u < params.outliers:
            cell.kind = "blurred"
        cell.shows = cell.kind == "normal" and rng.random() >= non_showing
        cell.expression = expression * rng.lognormal(0.0, 0.35)
        cell.marker = marker * rng.lognormal(0.0, 0.3)

    owner = _ownership(cells, canvas)
    sharp = {c: np.zeros((canvas, canvas), np.float32) for c in YEAST_CHANNELS}
    defocus = {c: np.zeros((canvas, canvas), np.float32) for c in YEAST_CHANNELS}
    points: list = []
    blurred_points: list = []
    for i, cell in enumerate(cells):
        target = defocus if cell.kind == "blurred" else sharp
        dest = blurred_points if cell.kind == "blurred" else points
        if cell.kind == "blurred":
            cell.expression *= 0.7
        _render_cell(rng, i, cell, cls, owner, target["gfp"], target["rfp"], dest, look)
    for pts, wts in points:
        _splat(sharp["gfp"], pts, wts)
    for pts, wts in blurred_points:
        _splat(defocus["gfp"], pts, wts)

    labels = np.array([k + 1 if c.shows else OTHER_OBJECT for c in cells] + [0], dtype=np.uint8)
    mask_canvas = labels[owner]  # owner -1 indexes the trailing 0
    n_debris = rng.poisson(params.outliers / 2 * len(cells))
    for _ in range(n_debris):
        _render_debris(rng, canvas, sharp["gfp"], sharp["rfp"], mask_canvas)

    illum = illumination_field((canvas, canvas), rng, strength=rng.uniform(0.15, 0.4))
    blur = rng.uniform(*params.blur)
    camera = Camera()
    channels = []
    for name in YEAST_CHANNELS:
        photons = sharp[name] + ndimage.gaussian_filter(defocus[name], rng.uniform(3.0, 5.0))
        background = (expression if name == "gfp" else marker) * rng.uniform(*params.background)
        img = form_image(photons, rng, background=background, blur_sigma=blur, illumination=illum, camera=camera)
        if name in params.channels:
            channels.append((params.channels.index(name), img))
    crop = (slice(_MARGIN, _MARGIN + params.size), slice(_MARGIN, _MARGIN + params.size))
    image = np.stack([img[crop] for _, img in sorted(channels, key=lambda t: t[0])])
    return image, np.ascontiguousarray(mask_canvas[crop])
