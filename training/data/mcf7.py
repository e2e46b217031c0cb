"""An MCF-7 mechanism-of-action screen simulator with pixel-level ground truth.

Modelled on BBBC021 (Caie et al. 2010, Ljosa et al. 2013): MCF-7 breast cancer cells treated
with compounds, fixed and stained for DNA (DAPI), beta-tubulin and F-actin, imaged in
widefield at about 0.65 um per pixel (a nucleus 12 to 20 px across, a spread cell 40 to 60 px).
Cells are adherent and crowded: territories touch, shapes are irregular, a few percent of
untreated cells are in mitosis.

Classes, each the phenotype a biologist reads off these three stains:

==========================  ================================================================
DMSO                        control: interphase cells with a radial microtubule network,
                            cortical actin and stress fibres; ~3 % normal bipolar mitoses
Actin disruptors            (cytochalasin, latrunculin) no stress fibres or smooth cortex:
                            bright actin aggregates; shrunken, arborised cell outlines
Aurora kinase inhibitors    giant cells with large, multi-lobed or several nuclei (failed
                            cytokinesis, polyploidy); fewer cells
DNA damage                  (etoposide, camptothecin) enlarged, irregular nuclei with
                            micronuclei in large flattened cells
Eg5 inhibitors              monopolar mitotic arrest: round cells with a ring of condensed
                            chromosomes around a single central microtubule aster
Microtubule destabilizers   (nocodazole, colchicine, vincristine) no filaments, diffuse
                            tubulin; many round mitotic cells with scattered chromosomes
Microtubule stabilizers     (taxol, docetaxel) thick bright microtubule bundles; multipolar
                            mitoses and micronucleated cells
Protein synthesis           (cycloheximide, emetine, anisomycin) sparse, compact cells with
                            large nuclei and a bright cortical rim in tubulin and actin
==========================  ================================================================

Not simulated, because in these three stains BBBC021 shows them only as subtle or
inconsistent changes (they are the classes every published method confuses most):
Cholesterol-lowering, DNA replication, Epithelial, Kinase inhibitors.

Heterogeneity as in the yeast simulator: in a treated well a per-image fraction of cells
looks untreated (``non_showing``), and outliers appear (apoptotic cells with a small bright
nucleus, out-of-focus cells, debris). Ground-truth masks (uint8): 0 background, ``k + 1``
for every pixel of a cell showing class ``k``'s phenotype (in DMSO images: every normal
cell), 255 for every other object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..data.optics import Camera, form_image, illumination_field
from ..data.yeast import check_ranges, check_screen_params

__all__ = ["MCF7_CLASSES", "MCF7_CHANNELS", "MCF7Params", "simulate_mcf7_image", "NOT_SIMULATED", "MCF7_COMPOUNDS",
           "mcf7_treatment"]

MCF7_CLASSES: tuple[str, ...] = (
    "Actin disruptors",
    "Aurora kinase inhibitors",
    "DMSO",
    "DNA damage",
    "Eg5 inhibitors",
    "Microtubule destabilizers",
    "Microtubule stabilizers",
    "Protein synthesis",
)
MCF7_CHANNELS: tuple[str, ...] = ("dna", "tubulin", "actin")
NOT_SIMULATED = ("Cholesterol-lowering", "DNA replication", "Epithelial", "Kinase inhibitors")
OTHER_OBJECT = 255
_MARGIN = 64

#: BBBC021 compounds of each simulated MOA, and the doses (uM) given to simulated wells. They
#: label images for treatment-level evaluation and compound-wise splits only: the simulator draws
#: the MOA's phenotype, not a compound's or a dose's own strength.
MCF7_COMPOUNDS = {
    "Actin disruptors": ("cytochalasin B", "cytochalasin D", "latrunculin B"),
    "Aurora kinase inhibitors": ("AZ258", "AZ841", "AZ-A"),
    "DMSO": ("DMSO",),
    "DNA damage": ("etoposide", "camptothecin", "chlorambucil", "cisplatin"),
    "Eg5 inhibitors": ("AZ-C", "AZ138"),
    "Microtubule destabilizers": ("nocodazole", "colchicine", "vincristine", "demecolcine"),
    "Microtubule stabilizers": ("taxol", "docetaxel", "epothilone B"),
    "Protein synthesis": ("cycloheximide", "emetine", "anisomycin"),
}
MCF7_DOSES = (0.3, 1.0, 3.0)


def mcf7_treatment(index: int) -> tuple[str, float]:
    """(compound, concentration) of image ``index`` of a simulated run (its class is
    ``MCF7_CLASSES[index % 8]``): compounds cycle, then doses; DMSO wells get 0."""
    cls = MCF7_CLASSES[index % len(MCF7_CLASSES)]
    compounds = MCF7_COMPOUNDS[cls]
    j = index // len(MCF7_CLASSES)
    if cls == "DMSO":
        return "DMSO", 0.0
    return compounds[j % len(compounds)], MCF7_DOSES[(j // len(compounds)) % len(MCF7_DOSES)]

# per-class layout: density factor, cell-size factor, mitotic fraction (of showing cells)
_LAYOUT = {
    "DMSO": (1.0, 1.0, 0.03), "Actin disruptors": (1.0, 0.8, 0.03), "Aurora kinase inhibitors": (0.5, 1.6, 0.0),
    "DNA damage": (0.7, 1.3, 0.0), "Eg5 inhibitors": (1.0, 1.0, 0.55), "Microtubule destabilizers": (0.9, 1.0, 0.45),
    "Microtubule stabilizers": (0.9, 1.0, 0.3), "Protein synthesis": (0.45, 0.85, 0.0),
}


@dataclass(frozen=True)
class MCF7Params:
    """Levels of one simulated screen. Ranges are drawn uniformly per image (``photons``
    log-uniformly, per channel), so one training set spans many microscopes and stainings.

    Attributes:
        size: image height and width in pixels.
        channels: which of ``dna, tubulin, actin`` to write, in order.
        non_showing: range of the per-image fraction of treated cells that look untreated.
        outliers: expected fraction of cells that are apoptotic or out of focus; debris at
            half this rate.
        density: range of untreated cells per 100 x 100 px (BBBC021 wells are 2 to 5).
        cell_radius: range of untreated cell radii in pixels.
        blur: range of the in-focus PSF's Gaussian sigma in pixels.
        photons: range of photons per pixel of a unit of stain, each channel drawn on its own
            (stain brightness and exposure, so the ratios between channels vary too).
        background: range of the background glow as a fraction of a channel's unit.
        tubulin_fill: range of the diffuse tubulin level in the cytoplasm, against filaments
            of weight about 1 (BBBC021's 20x widefield resolves few single microtubules).
        centrosome: range of the brightness of the centrosome beside the nucleus.
        actin_cortex: range of the cortical actin rim's brightness (the diffuse actin is 0.5).
        expression: range of the per-image sigma of each cell's own level of each stain (log-normal,
            drawn per cell and channel on their own): cells that take up more or less of one stain
            than their neighbours, which gives a field its bright tail. ``(0, 0)`` draws nothing.
        nuclear_exclusion: range of how much less tubulin lies over an interphase nucleus than
            beside it, drawn per cell (0: as much, 1: none). ``(0, 0)`` draws nothing.
    """

    size: int = 512
    channels: tuple[str, ...] = MCF7_CHANNELS
    non_showing: tuple[float, float] = (0.2, 0.5)
    outliers: float = 0.05
    density: tuple[float, float] = (2.0, 4.0)
    cell_radius: tuple[float, float] = (20.0, 28.0)
    blur: tuple[float, float] = (0.8, 1.8)
    photons: tuple[float, float] = (50.0, 500.0)
    background: tuple[float, float] = (0.02, 0.25)
    tubulin_fill: tuple[float, float] = (0.5, 1.1)
    centrosome: tuple[float, float] = (0.2, 1.0)
    actin_cortex: tuple[float, float] = (0.3, 1.2)
    expression: tuple[float, float] = (0.0, 0.0)
    nuclear_exclusion: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        check_screen_params(self, MCF7_CHANNELS)
        check_ranges(self, {"density": (0.1, 20.0), "cell_radius": (5.0, 100.0), "blur": (0.3, 6.0),
                            "photons": (5.0, 1e5), "background": (0.0, 2.0), "tubulin_fill": (0.0, 3.0),
                            "centrosome": (0.0, 5.0), "actin_cortex": (0.0, 5.0),
                            "expression": (0.0, 1.5), "nuclear_exclusion": (0.0, 1.0)})


@dataclass(frozen=True)
class _Look:
    """One image's draw of the per-image appearance settings of ``MCF7Params``."""

    tubulin_fill: float
    centrosome: float
    actin_cortex: float
    nuclear_exclusion: tuple[float, float]  # a range, drawn per cell


@dataclass
class _Cell:
    cy: float
    cx: float
    radius: float
    phenotype: str  # a class name, or "normal"
    state: str = "interphase"  # interphase | mitotic | apoptotic | blurred
    shows: bool = True
    harmonics: list = field(default_factory=list)  # (order, amplitude, phase) of the outline
    bright: float = 1.0
    stain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the cell's own level of dna, tubulin, actin


def _place(rng: np.random.Generator, p: MCF7Params, cls: str, canvas: int) -> list[_Cell]:
    density, size_factor, _ = _LAYOUT[cls]
    n_target = int(rng.uniform(*p.density) * density * (canvas / 100.0) ** 2)
    cells: list[_Cell] = []
    for _ in range(n_target * 30):
        if len(cells) >= n_target:
            break
        r = rng.uniform(*p.cell_radius) * size_factor
        cy, cx = rng.uniform(0, canvas, 2)
        if all((c.cy - cy) ** 2 + (c.cx - cx) ** 2 > (0.6 * (c.radius + r)) ** 2 for c in cells):
            cells.append(_Cell(cy, cx, r, cls))
    return cells


def _outline(rng: np.random.Generator, irregular: float) -> list:
    return [(k, rng.uniform(0.03, 0.12) * irregular / k ** 0.5, rng.uniform(0, 2 * np.pi)) for k in range(2, 7)]


def _territories(cells: list[_Cell], canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """(owner, rho): the cell each pixel belongs to (-1 none) and its radial position in it (0 centre, 1 edge).

    A pixel joins the cell minimising distance / outline radius, if that ratio is below 1,
    so neighbours share borders like crowded adherent cells.
    """
    best = np.full((canvas, canvas), np.inf, np.float32)
    owner = np.full((canvas, canvas), -1, np.int32)
    for i, c in enumerate(cells):
        reach = int(c.radius * 1.5) + 2
        y0, y1 = max(0, int(c.cy) - reach), min(canvas, int(c.cy) + reach)
        x0, x1 = max(0, int(c.cx) - reach), min(canvas, int(c.cx) + reach)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - c.cy, xx - c.cx
        phi = np.arctan2(dy, dx)
        r_phi = c.radius * (1 + sum(a * np.cos(k * phi + ph) for k, a, ph in c.harmonics))
        ratio = np.sqrt(dy ** 2 + dx ** 2) / r_phi
        region = best[y0:y1, x0:x1]
        take = (ratio < 1.0) & (ratio < region)
        region[take] = ratio[take]
        owner[y0:y1, x0:x1][take] = i
    return owner, best


def _blob(shape, cy, cx, ry, rx, angle, edge=0.8) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    ca, sa = np.cos(angle), np.sin(angle)
    u = ((yy - cy) * ca + (xx - cx) * sa) / ry
    v = (-(yy - cy) * sa + (xx - cx) * ca) / rx
    d = np.sqrt(u ** 2 + v ** 2)
    return np.clip((1.0 - d) * min(ry, rx) / edge + 0.5, 0, 1)


def _segments(target: np.ndarray, starts: np.ndarray, ends: np.ndarray, weight: float, rng, wiggle: float) -> None:
    """Add bright line segments (microtubules, fibres) by splatting points along them."""
    h, w = target.shape
    for (y0, x0), (y1, x1) in zip(starts, ends):
        n = max(2, int(np.hypot(y1 - y0, x1 - x0) * 1.5))
        t = np.linspace(0, 1, n)
        bend = rng.normal(0, wiggle) * np.sin(np.pi * t)
        ny, nx = -(x1 - x0), (y1 - y0)
        norm = max(np.hypot(ny, nx), 1e-6)
        ys = y0 + (y1 - y0) * t + bend * ny / norm
        xs = x0 + (x1 - x0) * t + bend * nx / norm
        yi, xi = np.rint(ys).astype(int), np.rint(xs).astype(int)
        keep = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        np.add.at(target, (yi[keep], xi[keep]), weight)


def _render_cell(rng, i, c: _Cell, owner, rho, dna, tub, act, look: _Look) -> None:
    reach = int(c.radius * 1.5) + 2
    canvas = owner.shape[0]
    y0, y1 = max(0, int(c.cy) - reach), min(canvas, int(c.cy) + reach)
    x0, x1 = max(0, int(c.cx) - reach), min(canvas, int(c.cx) + reach)
    if y0 >= y1 or x0 >= x1:
        return
    mine = owner[y0:y1, x0:x1] == i
    r = rho[y0:y1, x0:x1]
    shape = mine.shape
    ly, lx = c.cy - y0, c.cx - x0
    ph = c.phenotype
    b = c.bright
    d = np.zeros(shape, np.float32)
    t = np.zeros(shape, np.float32)
    a = np.zeros(shape, np.float32)
    rn = c.radius * rng.uniform(0.36, 0.46)
    if c.state == "apoptotic":
        d += 5.0 * _blob(shape, ly, lx, rn * 0.45, rn * 0.4, rng.uniform(0, np.pi))
        a += 1.6 * mine * (r < 0.5)
        t += 0.6 * mine * (r < 0.5)
    elif c.state == "mitotic":
        if ph == "Eg5 inhibitors":  # monopolar: a chromosome ring around one central aster
            ring = np.exp(-((np.hypot(*np.mgrid[0:shape[0], 0:shape[1]] - np.array([[[ly]], [[lx]]])) - rn * 0.7)
                            ** 2) / (2 * (rn * 0.18) ** 2))
            d += 3.2 * ring * (0.6 + 0.4 * rng.random(shape).astype(np.float32))
            t += 4.0 * _blob(shape, ly, lx, rn * 0.35, rn * 0.35, 0)
        elif ph in ("Microtubule destabilizers",):  # chromosomes scattered, no spindle
            for _ in range(rng.integers(6, 12)):
                oy, ox = rng.normal(0, rn * 0.45, 2)
                d += 2.6 * _blob(shape, ly + oy, lx + ox, rn * 0.22, rn * 0.14, rng.uniform(0, np.pi))
            t += 1.2 * mine * (r < 0.55)
        elif ph == "Microtubule stabilizers":  # multipolar spindle
            poles = rng.integers(3, 5)
            for k in range(poles):
                ang = 2 * np.pi * k / poles + rng.normal(0, 0.3)
                py, px = ly + np.sin(ang) * rn * 0.9, lx + np.cos(ang) * rn * 0.9
                t += 3.5 * _blob(shape, py, px, rn * 0.25, rn * 0.25, 0)
                d += 2.4 * _blob(shape, ly + np.sin(ang) * rn * 0.35, lx + np.cos(ang) * rn * 0.35, rn * 0.3,
                                 rn * 0.15, ang)
        else:  # normal metaphase: a chromosome bar between two asters
            ang = rng.uniform(0, np.pi)
            d += 3.0 * _blob(shape, ly, lx, rn * 0.3, rn * 0.9, ang)
            for s in (-1, 1):
                t += 3.0 * _blob(shape, ly + s * np.cos(ang) * rn, lx - s * np.sin(ang) * rn, rn * 0.3, rn * 0.3, 0)
            t += 0.8 * mine * (r < 0.55)
        a += 1.2 * mine * np.clip((r - 0.35) / 0.2, 0, 1)  # the cortex of a rounded cell
    else:
        # nucleus (or several): offset from the centre, textured chromatin, dark nucleoli
        n_nuclei, scale = 1, 1.0
        if ph == "Aurora kinase inhibitors":
            n_nuclei, scale = int(rng.integers(2, 5)), 1.0
        elif ph == "DNA damage":
            scale = 1.35
        elif ph == "Protein synthesis":  # real treated nuclei are 1.2x the controls' in a smaller cell
            scale = 1.45
        nuclei = np.zeros(shape, np.float32)
        for k in range(n_nuclei):
            off = rng.normal(0, c.radius * (0.12 if n_nuclei == 1 else 0.28), 2)
            ry, rx = rn * scale * rng.uniform(0.9, 1.15), rn * scale * rng.uniform(0.75, 1.0)
            nucleus = _blob(shape, ly + off[0], lx + off[1], ry, rx, rng.uniform(0, np.pi))
            nuclei = np.maximum(nuclei, nucleus)
            texture = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 1.5)
            d += nucleus * (1.3 + 1.5 * (texture - texture.mean()) / (texture.std() + 1e-6) * 0.15)
            for _ in range(rng.integers(1, 4)):
                oy, ox = rng.normal(0, ry * 0.35, 2)
                d -= 0.5 * nucleus * _blob(shape, ly + off[0] + oy, lx + off[1] + ox, ry * 0.18, ry * 0.18, 0)
        if ph in ("DNA damage", "Microtubule stabilizers") or (ph == "Aurora kinase inhibitors" and rng.random() < .5):
            for _ in range(rng.integers(1, 5)):  # micronuclei
                ang, dist = rng.uniform(0, 2 * np.pi), rn * scale * rng.uniform(1.1, 1.6)
                d += 1.6 * _blob(shape, ly + np.sin(ang) * dist, lx + np.cos(ang) * dist, rn * 0.22, rn * 0.22, 0)
        # tubulin: a radial network from a centrosome beside the nucleus
        cyto = mine & (r < 1.0)
        ang0 = rng.uniform(0, 2 * np.pi)
        cy_, cx_ = ly + np.sin(ang0) * rn * 1.1, lx + np.cos(ang0) * rn * 1.1
        if ph == "Microtubule destabilizers":
            t += (look.tubulin_fill + 0.4) * cyto
        else:
            bundles = ph == "Microtubule stabilizers"
            n_rays = int(rng.integers(8, 14) if bundles else rng.integers(40, 80))
            angles = rng.uniform(0, 2 * np.pi, n_rays)
            lengths = c.radius * rng.uniform(0.8, 1.3, n_rays)
            ends = np.stack([cy_ + np.sin(angles) * lengths, cx_ + np.cos(angles) * lengths], axis=1)
            # at 20x the aster's centre is a blur: filaments are resolved only away from it
            start = 0.0 if bundles else rn * rng.uniform(0.3, 1.0, n_rays)
            starts = np.stack([cy_ + np.sin(angles) * start, cx_ + np.cos(angles) * start], axis=-1) * np.ones((n_rays, 2))
            fil = np.zeros(shape, np.float32)
            _segments(fil, starts, ends, 2.4 if bundles else 0.5, rng, wiggle=3.0 if bundles else 1.5)
            fil = ndimage.gaussian_filter(fil, 1.2 if bundles else 0.7)
            # the diffuse part is densest around the nucleus and thins towards the edge
            t += (fil * (3.0 if bundles else 1.0) + look.tubulin_fill * (1.2 - 0.5 * np.clip(r, 0, 1))) * cyto
            t += look.centrosome * _blob(shape, cy_, cx_, 2.0, 2.0, 0)
        if look.nuclear_exclusion[1] > 0:  # the thick nucleus holds less tubulin than the flat cytoplasm
            t *= 1.0 - rng.uniform(*look.nuclear_exclusion) * nuclei
        # actin: cortex and stress fibres, or aggregates
        if ph == "Actin disruptors":
            a += 0.35 * cyto
            for _ in range(rng.integers(4, 11)):
                oy, ox = rng.normal(0, c.radius * 0.5, 2)
                a += 3.5 * _blob(shape, ly + oy, lx + ox, 2.2, 2.2, 0) * cyto
        else:
            cortex = np.exp(-((r - 0.93) ** 2) / (2 * 0.05 ** 2)) * cyto
            fib_angle = rng.uniform(0, np.pi)
            yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
            phase = (yy * np.cos(fib_angle) - xx * np.sin(fib_angle)) / rng.uniform(3.5, 5.0)
            fibres = np.clip(np.sin(phase + rng.uniform(0, 6.3)), 0, 1) ** 6
            fibres *= ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 4) > 0.5
            a += (look.actin_cortex * cortex + 0.8 * fibres * (r < 0.85) + 0.5) * cyto
            # lamellipodia: bright ruffles along a stretch of the edge, in untreated cells too
            angle = np.arctan2(yy - ly, xx - lx)
            for _ in range(rng.poisson(1.0)):
                off = np.angle(np.exp(1j * (angle - rng.uniform(0, 2 * np.pi))))
                a += (rng.uniform(0.8, 2.0) * np.exp(-0.5 * (off / 0.35) ** 2)
                      * np.exp(-((r - 0.9) ** 2) / (2 * 0.06 ** 2)) * cyto)
        if ph == "Protein synthesis":  # compact cells whose cortex is bright in tubulin and actin
            rim = np.exp(-((r - 0.9) ** 2) / (2 * 0.05 ** 2)) * cyto * rng.uniform(0.4, 1.4)
            t += rim
            a += rim
    k = (slice(y0, y1), slice(x0, x1))
    sd, st, sa = c.stain
    dna[k] += d * (b * sd) * mine
    tub[k] += t * (b * st) * mine
    act[k] += a * (b * sa) * mine


def simulate_mcf7_image(cls: str, rng: np.random.Generator, params: MCF7Params = MCF7Params()):
    """Simulate one field of view of a well treated with a compound of MOA ``cls``.

    Args:
        cls: one of ``MCF7_CLASSES``.
        rng: the random generator (the image is a pure function of its state).
        params: screen-level settings.

    Returns:
        (image, mask): uint16 (C, H, W) camera image with channels ``params.channels``,
        and the uint8 (H, W) ground-truth mask.
    """
    if cls not in MCF7_CLASSES:
        raise ValueError(f"unknown MCF-7 class {cls!r}; choose from {', '.join(MCF7_CLASSES)}")
    k = MCF7_CLASSES.index(cls)
    canvas = params.size + 2 * _MARGIN
    cells = _place(rng, params, cls, canvas)
    non_showing = 0.0 if cls == "DMSO" else rng.uniform(*params.non_showing)
    _, _, mitotic = _LAYOUT[cls]
    look = _Look(tubulin_fill=rng.uniform(*params.tubulin_fill), centrosome=rng.uniform(*params.centrosome),
                 actin_cortex=rng.uniform(*params.actin_cortex), nuclear_exclusion=params.nuclear_exclusion)
    expression = rng.uniform(*params.expression) if params.expression[1] > 0 else 0.0
    for c in cells:
        u = rng.random()
        c.bright = rng.lognormal(0.0, 0.25)
        if expression:
            c.stain = tuple(rng.lognormal(0.0, expression, 3))
        if u < params.outliers / 2:
            c.state, c.shows, c.phenotype = "apoptotic", False, "normal"
        elif u < params.outliers:
            c.state, c.shows = "blurred", False
        elif rng.random() < non_showing:
            c.shows, c.phenotype = False, "DMSO"
            c.radius /= _LAYOUT[cls][1]
        if c.state == "interphase" and rng.random() < (mitotic if c.shows else 0.03):
            c.state = "mitotic"
        irregular = 2.5 if (c.phenotype == "Actin disruptors" and c.shows) else 1.0
        c.harmonics = _outline(rng, irregular)
    owner, rho = _territories(cells, canvas)
    for i, c in enumerate(cells):  # rounded cells (mitotic, apoptotic) occupy the middle of their territory
        if c.state in ("mitotic", "apoptotic"):
            reach = int(c.radius * 1.5) + 2
            box = (slice(max(0, int(c.cy) - reach), max(0, int(c.cy) + reach)),
                   slice(max(0, int(c.cx) - reach), max(0, int(c.cx) + reach)))
            owned = owner[box] == i
            owner[box][owned & (rho[box] >= (0.6 if c.state == "mitotic" else 0.5))] = -1
    sharp = {name: np.zeros((canvas, canvas), np.float32) for name in MCF7_CHANNELS}
    defocus = {name: np.zeros((canvas, canvas), np.float32) for name in MCF7_CHANNELS}
    for i, c in enumerate(cells):
        target = defocus if c.state == "blurred" else sharp
        _render_cell(rng, i, c, owner, rho, target["dna"], target["tubulin"], target["actin"], look)
    labels = np.array([k + 1 if c.shows else OTHER_OBJECT for c in cells] + [0], dtype=np.uint8)
    mask_canvas = labels[owner]
    for _ in range(rng.poisson(params.outliers / 2 * len(cells))):  # debris: bright in every channel
        y, x = rng.uniform(0, canvas, 2)
        blob = _blob((canvas, canvas), y, x, rng.uniform(2, 5), rng.uniform(2, 5), rng.uniform(0, np.pi))
        for name in MCF7_CHANNELS:
            sharp[name] += blob * rng.uniform(2, 6)
        mask_canvas[(blob > 0.5) & (mask_canvas == 0)] = OTHER_OBJECT

    photons_per_unit = {name: float(np.exp(rng.uniform(*np.log(params.photons)))) for name in MCF7_CHANNELS}
    illum = illumination_field((canvas, canvas), rng, strength=rng.uniform(0.1, 0.35))
    blur = rng.uniform(*params.blur)
    formed = {}
    for name in MCF7_CHANNELS:  # every channel, so choosing channels does not change the noise drawn
        photons = photons_per_unit[name] * (sharp[name] + ndimage.gaussian_filter(defocus[name], rng.uniform(3, 5)))
        formed[name] = form_image(photons, rng, background=photons_per_unit[name] * rng.uniform(*params.background),
                                  blur_sigma=blur, illumination=illum, camera=Camera())
    crop = (slice(_MARGIN, _MARGIN + params.size), slice(_MARGIN, _MARGIN + params.size))
    image = np.stack([formed[name][crop] for name in params.channels])
    return image, np.ascontiguousarray(mask_canvas[crop])
