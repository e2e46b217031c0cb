"""Write a simulated screen to disk: images, ground-truth masks and a manifest.

Usage::

    python -m training.simulate yeast --n 220 --seed 1 --out data/yeast-train
    python -m training.simulate yeast --n 110 --seed 1000 --out data/yeast-test --non-showing 0.25
    python -m training.simulate mcf7 --n 240 --seed 1 --out data/mcf7-train
    python -m training.simulate montage --out docs/simulator.png
    python -m training.simulate montage --kind mcf7 --out docs/mcf7.png

Image ``i`` of a run is a pure function of ``(seed, i)``: the same seed gives the same
bytes, and a longer run starts with the images of a shorter one. Labels cycle through
the classes, so every class has ``n // n_classes`` or one more images.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from milcnn.io.images import write_atomic, write_tiff
from .data.mcf7 import MCF7_CLASSES, MCF7Params, mcf7_treatment, simulate_mcf7_image
from .data.yeast import YEAST_CLASSES, YeastParams, simulate_yeast_image
from .options import prog

SIMULATORS = {"yeast": (YEAST_CLASSES, YeastParams, simulate_yeast_image),
              "mcf7": (MCF7_CLASSES, MCF7Params, simulate_mcf7_image)}
#: the pixel size (um) each simulator draws at, written into its images (ImageJ resolution and unit), so the
#: SDK reads their scale. Yeast: mother cells 20-38 px at 0.17 um (3.4-6.5 um). MCF-7: cells drawn at 47 px
#: stand for BBBC021's, which measure 1.9x that at its 0.65 um per pixel (benchmarks/results/sim_vs_real.md)
PIXEL_SIZE_UM = {"yeast": 0.17, "mcf7": round(0.65 * 89 / 47, 4)}
#: extra manifest columns per image, for simulators of drug screens
TREATMENTS = {"mcf7": (("compound", "concentration"), mcf7_treatment)}


def simulator_fingerprint(kind: str, params) -> str:
    """What a simulated set depends on besides seed and size: the simulator's code (its module and the
    shared optics) and its settings, hashed. A cached set made with another fingerprint is stale."""
    import hashlib
    import inspect

    from .data import optics

    module = sys.modules[SIMULATORS[kind][2].__module__]
    digest = hashlib.sha256()
    for source in (inspect.getsource(module), inspect.getsource(optics), repr(params)):
        digest.update(source.encode())
    return digest.hexdigest()[:16]


#: the file in a simulated folder that says which images it holds (seed and simulator), for resuming
SIMULATION_MARKER = ".simulator"


def image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


def _one(job: tuple) -> list:
    kind, params, seed, index, out, keep = job
    classes, _, simulate = SIMULATORS[kind]
    label = classes[index % len(classes)]
    name = f"{kind}_{seed}_{index:06d}.tif"
    if not (keep and (out / "images" / name).is_file() and (out / "masks" / name).is_file()):
        image, mask = simulate(label, image_rng(seed, index), params)
        write_tiff(out / "images" / name, image, pixel_size=PIXEL_SIZE_UM[kind])
        write_tiff(out / "masks" / name, mask)
    row = [f"images/{name}", label, f"masks/{name}"]
    if kind in TREATMENTS:
        compound, concentration = TREATMENTS[kind][1](index)
        row += [compound, repr(concentration)]
    return row


def simulate_dataset(kind: str, *, n: int, seed: int, out: Path, params, workers: int = 1) -> Path:
    """Simulate ``n`` images into ``out`` and return the manifest's path.

    Resumable: ``out/.simulator`` records the seed and ``simulator_fingerprint``; when it matches, images
    already written (each file is written atomically) are kept, so a stopped run, or a larger ``n`` with
    the same seed, simulates only the images that are missing. Otherwise every image is written anew.
    """
    if kind not in SIMULATORS:
        raise ValueError(f"unknown simulator {kind!r}; choose from {', '.join(SIMULATORS)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    marker, stamp = out / SIMULATION_MARKER, f"{kind} seed {seed} {simulator_fingerprint(kind, params)}\n"
    keep = marker.is_file() and marker.read_text() == stamp
    if not keep:  # another seed or simulator wrote here: its images of this name go before the marker says ours
        marker.unlink(missing_ok=True)
        for folder in ("images", "masks"):
            for stale in (out / folder).glob(f"{kind}_{seed}_*.tif"):
                stale.unlink()
        with write_atomic(marker, "w") as fh:
            fh.write(stamp)
    jobs = [(kind, params, seed, i, out, keep) for i in range(n)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(_one, jobs, chunksize=4))
    else:
        rows = [_one(j) for j in jobs]
    manifest = out / "manifest.csv"
    with write_atomic(manifest, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "mask_path", *TREATMENTS.get(kind, ((),))[0]])
        writer.writerows(rows)
    return manifest


def _range(text: str) -> tuple[float, float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected a value or a range LO,HI, got {text!r}")
    return parts[0], parts[1]


def montage(out: Path, *, seed: int = 7, crop: int = 200) -> None:
    """Every yeast class at full resolution: GFP in grey, and one GFP/RFP merge."""
    from PIL import Image, ImageDraw

    panels = []
    params = YeastParams(non_showing=(0.2, 0.2), outliers=0.0)
    for k, cls in enumerate(YEAST_CLASSES):
        image, _ = simulate_yeast_image(cls, image_rng(seed, k), params)
        panels.append((cls, _display(image[0])[:crop, :crop]))
    image, _ = simulate_yeast_image("mitochondria", image_rng(seed, 99), YeastParams())
    g, r = _display(image[0])[:crop, :crop], _display(image[1])[:crop, :crop]
    merge = np.stack([r, g, r], axis=-1)
    panels.append(("merge: gfp green, rfp magenta", merge))
    gap, label_h, cols = 4, 16, 4
    rows = -(-len(panels) // cols)
    sheet = Image.new("RGB", (cols * (crop + gap) + gap, rows * (crop + gap + label_h) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, panel) in enumerate(panels):
        x = gap + (i % cols) * (crop + gap)
        y = gap + (i // cols) * (crop + gap + label_h)
        draw.text((x + 2, y + 2), name, fill="black")
        tile = Image.fromarray(panel if panel.ndim == 3 else np.stack([panel] * 3, -1))
        sheet.paste(tile, (x, y + label_h))
    out.parent.mkdir(parents=True, exist_ok=True)
    with write_atomic(out, "wb") as fh:
        sheet.save(fh, format="PNG")


def montage_mcf7(out: Path, *, seed: int = 7, size: int = 320) -> None:
    """Every MCF-7 class as a merge: DNA blue, tubulin green, F-actin red (40 % of cells untreated)."""
    from PIL import Image, ImageDraw

    gap, label_h, cols = 4, 16, 4
    rows = -(-len(MCF7_CLASSES) // cols)
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + gap + label_h) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    params = MCF7Params(size=size, non_showing=(0.4, 0.4))
    for i, cls in enumerate(MCF7_CLASSES):
        image, _ = simulate_mcf7_image(cls, image_rng(seed, i), params)
        merge = np.stack([_display(image[2]), _display(image[1]), _display(image[0])], axis=-1)
        x = gap + (i % cols) * (size + gap)
        y = gap + (i // cols) * (size + gap + label_h)
        draw.text((x + 2, y + 2), cls, fill="black")
        sheet.paste(Image.fromarray(merge), (x, y + label_h))
    out.parent.mkdir(parents=True, exist_ok=True)
    with write_atomic(out, "wb") as fh:
        sheet.save(fh, format="PNG")


def _display(channel: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(channel, [0.5, 99.9])
    return (np.clip((channel.astype(np.float32) - lo) / max(hi - lo, 1), 0, 1) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("simulate"), description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind, help_, channels, non_showing, outliers in (
            ("yeast", "yeast GFP localization (11 DeepLoc classes)", "gfp,rfp", "cells showing no pattern",
             "dead or out of focus"),
            ("mcf7", "MCF-7 mechanism of action, 3 channels (BBBC021-like)", "dna,tubulin,actin",
             "treated cells that look untreated", "apoptotic or out of focus")):
        a = sub.add_parser(kind, help=help_)
        a.add_argument("--n", type=int, required=True, help="number of images")
        a.add_argument("--seed", type=int, required=True)
        a.add_argument("--out", type=Path, required=True)
        a.add_argument("--size", type=int, default=512, help="image height and width (default 512)")
        a.add_argument("--channels", default=channels, help=f"channels to write, in order (default {channels})")
        a.add_argument("--non-showing", type=_range, default=(0.2, 0.5),
                       help=f"fraction of {non_showing}, a value or a range LO,HI drawn per image (default 0.2,0.5)")
        a.add_argument("--outliers", type=float, default=0.05,
                       help=f"fraction of cells {outliers}; debris at half this rate (default 0.05)")
        a.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
        if kind == "mcf7":
            a.add_argument("--expression", type=_range, default=MCF7Params.expression, metavar="LO,HI",
                           help="per-image sigma of each cell's own level of each stain (log-normal; default "
                                "%(default)s)")
            a.add_argument("--nuclear-exclusion", type=_range, default=MCF7Params.nuclear_exclusion, metavar="LO,HI",
                           help="per cell, how much less tubulin lies over the nucleus (0-1; default %(default)s)")
    m = sub.add_parser("montage", help="write docs/simulator.png (or docs/mcf7.png with --kind mcf7)")
    m.add_argument("--kind", dest="kind_", choices=["yeast", "mcf7"], default="yeast")
    m.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.kind == "montage":
        out = args.out or Path("docs/simulator.png" if args.kind_ == "yeast" else "docs/mcf7.png")
        (montage if args.kind_ == "yeast" else montage_mcf7)(out)
        print(f"wrote {out}")
        return 0
    classes, params_type, _ = SIMULATORS[args.kind]
    try:
        channels = tuple(ch.strip() for ch in args.channels.split(",") if ch.strip())
        extra = ({"expression": args.expression, "nuclear_exclusion": args.nuclear_exclusion} if args.kind == "mcf7"
                 else {})
        params = params_type(size=args.size, channels=channels, non_showing=args.non_showing, outliers=args.outliers,
                             **extra)
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
    except ValueError as exc:
        parser.error(str(exc))
    manifest = simulate_dataset(args.kind, n=args.n, seed=args.seed, out=args.out, params=params, workers=args.workers)
    print(f"wrote {args.n} images ({', '.join(channels)}; classes {', '.join(classes)}) and {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
