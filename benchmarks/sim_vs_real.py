"""Real cells against simulated cells of the same classes, side by side and measured.

``python -m benchmarks.sim_vs_real [--kind yeast mcf7] [--data DIR] [--n 4] [--tag T] [--all-fields]``
crops simulated cells of the classes a real set has (``training/data/real.py``) at the real set's
scale, measures real and simulated crops with the same code and writes:

- ``benchmarks/results/sim_vs_real[-T].{md,json}``: per class and channel, medians over cells of
  cell diameter, blur, noise, peakiness and background (below);
- ``docs/sim_vs_real_<kind>[-T].png``: rows of real cells above rows of simulated cells per class,
  each crop shown as the model sees it (per-crop 1-99.8 percentile stretch).

Only the real sets' validation halves are used (``RealSet.validation``: AAC1, AAP1, AAH1; the first
4 DMSO and 6 protein-synthesis fields), because the simulator is tuned on what this shows and the
test halves must stay unseen; ``--all-fields`` takes every field.

Every measure is invariant to an affine change of intensity (gain, offset), because the
model normalises each image by its percentiles; only shapes and ratios are compared:

- ``diameter``: equivalent diameter (px) of the object under the crop centre, thresholded
  (Otsu) on the smoothed segmentation channel (yeast: the cytosolic marker, MCF-7: DNA);
- ``blur``: edge width as a Gaussian sigma (px), ``1 / (sqrt(2 pi) * max |grad|)`` of the
  0-1 stretched segmentation channel around that object, less 1 px of pre-smoothing in
  quadrature;
- ``noise``: the background's pixel-to-pixel noise (std of the image minus its 1 px Gaussian
  smoothing, outside all objects) over the cell's signal (its median less the background's);
- ``peakiness``: the cell's 99th percentile over its median, both less the background, per
  channel: about 1-2 for a diffuse fill, high for dots, tubules and rims;
- ``background``: the background's median less the camera offset estimate (the crop's 0.1th
  percentile) over the cell's median less the same: how bright the space between cells is.

- ``rounded`` (MCF-7): the share of cells whose centre is more than twice as bright as the class's
  median cell in both DNA and tubulin (the 90th percentile of the middle 20 x 20 px over the crop's
  1st percentile): cells rounded up in mitosis, which every field has a few of.

For MCF-7 the crops centre on nuclei in a confluent layer with little empty space, so noise,
peakiness and background are taken over the whole crop against its offset, and
``background`` is the share of the crop darker than 15 % of its range (empty space).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from milcnn.logs import log_to_stderr
from training.data.real import DEFAULT_REAL_DATA, REAL_SETS, load_fields
from training.metrics import otsu_threshold

log = logging.getLogger(__name__)

RESULTS = Path("benchmarks/results")
#: per kind: real set, the channel whose objects the crops centre on, their diameter in the simulator (px,
#: for finding them), and where the other measures are taken: in that object (the whole cell) or the crop
KINDS = {"yeast": ("yeast-chong", "rfp", 27.0, "object"), "mcf7": ("bbbc021-cells", "dna", 19.0, "crop")}
#: a fixed reference size of the simulators' cells (the 1.x zoo models' recorded cell diameters): simulated
#: crops are zoomed by a real set's cell diameter over it; ``size_ratio`` divides the zoom back out
SIMULATED_CELL_DIAMETER = {"yeast": 27.0, "mcf7": 47.0}
MEASURES = ("diameter", "blur", "noise", "peakiness", "background")


def measure_crop(crop: np.ndarray, seg_channel: int, region: str = "object") -> dict | None:
    """The measures of one (C, h, w) float crop centred on an object; None when none is at the centre.
    ``region`` "crop" takes noise, peakiness and background over the whole crop against its offset
    (for crops centred on nuclei in a confluent layer, where there is no empty background)."""
    crop = crop.astype(np.float32)
    seg = ndimage.gaussian_filter(crop[seg_channel], 1.5)
    fg = seg > otsu_threshold(seg, bins=128)
    labels, n = ndimage.label(fg)
    h, w = fg.shape
    centre = labels[h // 2 - 3:h // 2 + 4, w // 2 - 3:w // 2 + 4]
    ids = centre[centre > 0]
    if n == 0 or ids.size == 0:
        return None
    cell = labels == np.bincount(ids).argmax()
    bg = ~ndimage.binary_dilation(fg, iterations=3)
    if cell.sum() < 20 or bg.sum() < 50:
        return None
    out = {"diameter": float(2 * np.sqrt(cell.sum() / np.pi))}
    lo, hi = np.percentile(crop[seg_channel], [1, 99.8])
    stretched = ndimage.gaussian_filter((crop[seg_channel] - lo) / max(hi - lo, 1e-6), 1.0)
    edge = ndimage.binary_dilation(cell, iterations=3) & ~ndimage.binary_erosion(cell, iterations=3)
    grad = np.hypot(*np.gradient(stretched))[edge]
    sigma = 1.0 / (np.sqrt(2 * np.pi) * max(float(grad.max()), 1e-6))
    out["blur"] = float(np.sqrt(max(sigma**2 - 1.0, 0.0)))
    noise, peak, back = [], [], []
    inside = cell if region == "object" else np.ones_like(cell)
    for c in range(crop.shape[0]):
        x = crop[c]
        offset = float(np.percentile(x, 0.1))
        span = max(float(np.percentile(x, 99.8)) - offset, 1e-6)
        m = float(np.median(x[inside]))
        if region == "object":
            b = float(np.median(x[bg]))
            back.append(float((b - offset) / max(m - offset, 1e-3 * span)))
            hp = (x - ndimage.gaussian_filter(x, 1.0))[bg]
        else:  # no empty background: the share of the crop that is dark
            b = offset
            back.append(float(np.mean(x < offset + 0.15 * span)))
            hp = (x - ndimage.gaussian_filter(x, 1.0)).ravel()
        signal = max(m - b, 1e-3 * span)
        noise.append(float(hp.std() / signal))
        peak.append(float((np.percentile(x[inside], 99) - b) / signal))
    out.update(noise=noise, peakiness=peak, background=back)
    return out


def simulated_crops(kind: str, classes: list[str], *, n_images: int, zoom: float, size: int,
                    seed: int = 7, settings: dict | None = None) -> dict[str, list[np.ndarray]]:
    """Cells of ``n_images`` simulated images per class, resized by ``zoom`` and cropped ``size`` px
    around each object of the segmentation channel (as the real crops were cut around each cell).
    ``settings``: simulator settings that differ from the defaults (e.g. ``{"expression": (0.2, 0.5)}``)."""
    from milcnn.process.scale import resize_chw
    from training.simulate import SIMULATORS, image_rng

    sim_classes, params_cls, simulate = SIMULATORS[kind]
    params = params_cls(**(settings or {}))
    seg_channel = list(params.channels).index(KINDS[kind][1])
    out: dict[str, list[np.ndarray]] = {}
    for cls in classes:
        crops = []
        for i in range(n_images):
            image, _ = simulate(cls, image_rng(seed, sim_classes.index(cls) * 1000 + i), params)
            x = image.astype(np.float32)
            x = resize_chw(x, (round(x.shape[1] * zoom), round(x.shape[2] * zoom)))
            seg = ndimage.gaussian_filter(x[seg_channel], 2.0)
            fg = seg > otsu_threshold(seg, bins=128)
            dist = ndimage.distance_transform_edt(fg)
            radius = KINDS[kind][2] * zoom / 2
            peaks = (dist == ndimage.maximum_filter(dist, size=int(radius))) & (dist > 0.5 * radius)
            half = size // 2
            for y, xx in np.argwhere(peaks):
                if half <= y < x.shape[1] - half and half <= xx < x.shape[2] - half:
                    crops.append(x[:, y - half:y - half + size, xx - half:xx - half + size])
        out[cls] = crops
    return out


def rounded_share(crops: np.ndarray, channels: tuple[int, int] = (0, 1), *, factor: float = 2.0,
                  middle: int = 20) -> float:
    """The share of ``crops`` (N, C, h, w) whose middle is more than ``factor`` times the median crop's in
    both ``channels`` (the 90th percentile of the middle ``middle`` x ``middle`` px, less the crop's
    1st percentile)."""
    crops = np.asarray(crops, np.float32)
    if not len(crops):
        return float("nan")
    h, w = crops.shape[-2:]
    y0, x0 = (h - middle) // 2, (w - middle) // 2
    offset = np.percentile(crops.reshape(len(crops), crops.shape[1], -1), 1, axis=2)
    centre = np.percentile(crops[:, :, y0:y0 + middle, x0:x0 + middle].reshape(len(crops), crops.shape[1], -1),
                           90, axis=2) - offset
    relative = centre[:, list(channels)] / np.median(centre[:, list(channels)], axis=0)
    return float(np.mean((relative > factor).all(axis=1)))


def _summary(values: list[dict], n_channels: int) -> dict:
    s = {"cells": len(values)}
    for key in MEASURES:
        if key in ("diameter", "blur"):
            s[key] = round(float(np.median([v[key] for v in values])), 2) if values else None
        else:
            s[key] = [round(float(np.median([v[key][c] for v in values])), 3) if values else None
                      for c in range(n_channels)]
    return s


def compare(kind: str, data_root: Path, *, n_images: int = 4, all_fields: bool = False,
            settings: dict | None = None) -> tuple[dict, np.ndarray]:
    """Measure the real set of ``kind`` (its validation half unless ``all_fields``) and its simulated
    counterparts (the simulator's defaults, changed by ``settings``); return (results, montage)."""
    set_name, seg_name, _, region = KINDS[kind]
    rs = REAL_SETS[set_name]
    fields = [f for f in load_fields(rs, data_root) if all_fields or rs.half(f) == "validation"]
    seg_channel = list(rs.channels).index(seg_name)
    size = fields[0].cells.shape[-1]
    zoom = rs.cell_diameter / SIMULATED_CELL_DIAMETER[kind]
    by_class: dict[str, list[np.ndarray]] = {}
    for f in fields:
        by_class.setdefault(f.group.label.split("|")[0], []).append(f.cells)
    sim = simulated_crops(kind, list(by_class), n_images=n_images, zoom=zoom, size=size, settings=settings)
    results = {"kind": kind, "real_set": set_name, "channels": list(rs.channels), "zoom": round(zoom, 3),
               "real_fields": [f.path.name for f in fields],
               "simulated_images_per_class": n_images, "classes": {}}
    if settings:
        results["simulator_settings"] = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
    rows = []
    rng = np.random.default_rng(0)
    for cls, stacks in by_class.items():
        real = np.concatenate(stacks)
        real_m = [m for m in (measure_crop(c, seg_channel, region) for c in real) if m]
        sim_m = [m for m in (measure_crop(c, seg_channel, region) for c in sim[cls]) if m]
        results["classes"][cls] = {"real": _summary(real_m, real.shape[1]), "simulated": _summary(sim_m, real.shape[1])}
        if kind == "mcf7":
            for source, crops in (("real", real), ("simulated", sim[cls])):
                results["classes"][cls][source]["rounded"] = round(rounded_share(crops), 4)
        real_d, sim_d = results["classes"][cls]["real"]["diameter"], results["classes"][cls]["simulated"]["diameter"]
        # how many times the simulator's own size the real objects are (simulated crops were zoomed by `zoom`)
        results["classes"][cls]["size_ratio"] = round(real_d / (sim_d / zoom), 3) if real_d and sim_d else None
        for source in (real, np.array(sim[cls]) if sim[cls] else np.zeros((0,) + real.shape[1:])):
            pick = source[rng.permutation(len(source))[:8]] if len(source) else source
            rows.append((cls, _row(pick, size, kind)))
    return results, _montage(rows, size)


def _display(crop: np.ndarray, kind: str) -> np.ndarray:
    """(C, h, w) -> (h, w, 3) in [0, 1]: yeast GFP green and RFP magenta; MCF-7 DNA blue, tubulin green,
    actin red; each channel stretched 1-99.8 % within the crop."""
    x = [np.clip((c - np.percentile(c, 1)) / max(np.percentile(c, 99.8) - np.percentile(c, 1), 1e-6), 0, 1)
         for c in crop.astype(np.float32)]
    if kind == "yeast":
        g, m = x[0], x[1] * 0.6
        return np.stack([m, g, m], -1)
    return np.stack([x[2], x[1], x[0]], -1)


def _row(crops: np.ndarray, size: int, kind: str) -> np.ndarray:
    row = np.ones((size, 8 * (size + 2), 3), np.float32)
    for i, c in enumerate(crops):
        row[:, i * (size + 2):i * (size + 2) + size] = _display(c, kind)
    return row


def _montage(rows, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    label_w = 150
    scale = 2
    h = len(rows) * (size * scale + 4)
    w = label_w + rows[0][1].shape[1] * scale
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (cls, row) in enumerate(rows):
        y = i * (size * scale + 4)
        img = Image.fromarray((row * 255).astype(np.uint8)).resize((row.shape[1] * scale, size * scale), Image.NEAREST)
        canvas.paste(img, (label_w, y))
        draw.text((4, y + size * scale // 2 - 12), cls, fill="black")
        draw.text((4, y + size * scale // 2 + 2), "real" if i % 2 == 0 else "simulated", fill="black")
    return np.asarray(canvas)


def render(all_results: list[dict]) -> str:
    lines = ["# Real cells against simulated cells", "",
             "Made by `python -m benchmarks.sim_vs_real`. Medians over cells; every measure is "
             "described in `benchmarks/sim_vs_real.py` and is invariant to gain and offset. Simulated cells "
             "are resized to the real set's cell size first, so blur and diameter compare at the same scale.", ""]
    for r in all_results:
        ch = r["channels"]
        lines += [f"## {r['kind']} ({r['real_set']}; simulated images zoomed {r['zoom']}x)", "",
                  f"Real fields: {', '.join(r['real_fields'])}.", ""]
        if r.get("simulator_settings"):
            lines += ["Simulator settings other than its defaults: " + ", ".join(
                f"`{k}` {','.join(f'{x:g}' for x in v) if isinstance(v, list) else f'{v:g}'}"
                for k, v in r["simulator_settings"].items()) + ".", ""]
        lines += ["| class | source | cells | diameter (px) | blur (px) | "
                  + " | ".join(f"{m} {c}" for m in ("noise", "peakiness", "background") for c in ch) + " |",
                  "|---|---|---|---|---|" + "---|" * (3 * len(ch))]
        for cls, both in r["classes"].items():
            for source in ("real", "simulated"):
                s = both[source]
                lines.append(f"| {cls} | {source} | {s['cells']} | {s['diameter']} | {s['blur']} | "
                             + " | ".join(str(v) for m in ("noise", "peakiness", "background") for v in s[m]) + " |")
        lines += ["", "Real objects (" + KINDS[r["kind"]][1] + " channel) are "
                  + ", ".join(f"{both['size_ratio']}x in {cls}" for cls, both in r["classes"].items())
                  + " the simulator's own size (the diameters above, the simulated ones divided by the zoom).", ""]
        rounded = {cls: (both["real"].get("rounded"), both["simulated"].get("rounded")) for cls, both in r["classes"].items()}
        if any(v[0] is not None for v in rounded.values()):
            lines += ["Cells rounded up (bright in both DNA and tubulin, `rounded`): "
                      + ", ".join(f"{cls} real {100 * a:.1f} %, simulated {100 * b:.1f} %" for cls, (a, b) in rounded.items())
                      + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from PIL import Image

    from milcnn.io.images import write_atomic

    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_vs_real", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", nargs="+", choices=sorted(KINDS), default=sorted(KINDS, reverse=True))
    parser.add_argument("--data", type=Path, default=DEFAULT_REAL_DATA)
    parser.add_argument("--n", type=int, default=4, help="simulated images per class (default 4)")
    parser.add_argument("--tag", default="", help="suffix of the output names (e.g. 1.x for a run at an old commit)")
    parser.add_argument("--all-fields", action="store_true", help="every real field, not only the validation half")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--sim", action="append", default=[], metavar="SETTING=LO,HI",
                        help="a simulator setting other than its default, e.g. expression=0.2,0.5 (repeatable; "
                             "with one --kind)")
    args = parser.parse_args(argv)
    settings = {}
    for item in args.sim:
        key, sep, value = item.partition("=")
        try:
            parts = tuple(float(v) for v in value.split(","))
        except ValueError:
            parts = ()
        if not sep or not parts:
            parser.error(f"--sim expects SETTING=VALUE or SETTING=LO,HI, got {item!r}")
        settings[key.strip().replace("-", "_")] = parts if len(parts) > 1 else parts[0]
    if settings and len(args.kind) != 1:
        parser.error("--sim changes one simulator: pass one --kind")
    if settings:
        from training.simulate import SIMULATORS

        try:
            SIMULATORS[args.kind[0]][1](**settings)
        except (TypeError, ValueError) as exc:  # an unknown setting or a value out of range
            parser.error(f"--sim: {exc}")
    log_to_stderr()
    results = []
    suffix = f"-{args.tag}" if args.tag else ""
    for kind in args.kind:
        r, montage = compare(kind, args.data, n_images=args.n, all_fields=args.all_fields, settings=settings)
        results.append(r)
        png = args.docs / f"sim_vs_real_{kind}{suffix}.png"
        with write_atomic(png, "wb") as fh:
            Image.fromarray(montage).save(fh, format="PNG")
        log.info("%s", png)
    args.out.mkdir(parents=True, exist_ok=True)
    with write_atomic(args.out / f"sim_vs_real{suffix}.json", "w") as fh:
        json.dump(results, fh, indent=1)
    with write_atomic(args.out / f"sim_vs_real{suffix}.md", "w") as fh:
        fh.write(render(results))
    log.info("%s", args.out / f"sim_vs_real{suffix}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
