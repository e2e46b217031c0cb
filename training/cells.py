"""Record how a model counts cells (``config.json``'s ``cells`` block), validated against the simulator's count.

Usage (the commands behind the zoo's ``cells`` blocks)::

    python -m training.cells zoo/mcf7-moa --simulator mcf7 --channel dna --diameter 22 --objects nuclei --version 2.7.0
    python -m training.cells zoo/yeast-loc --simulator yeast --channel rfp --diameter 22 --objects cells --version 2.2.0

Simulates ``--per-class`` fields of every class (512 x 512, seeds ``[--seed, class, i]``; the diameters were
chosen on seeds 7 and 8, so validate on another), counts them with ``milcnn.process.cells.count_cells`` in the
channel at the diameter given, and compares with the simulator's own count: the cells whose centre lies in the
field. Writes the block, with what was measured (``validated``), into the folder's ``config.json`` and card
(``model_card.update_folder``) with the version given, and re-pins the zoo registry's entry when the folder is
one of the zoo's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def simulated_counts(simulator: str, *, per_class: int, seed: int, channel: str):
    """[(class, plane of ``channel``, the simulator's count)] for ``per_class`` fields of every class."""
    if simulator == "mcf7":
        from .data.mcf7 import _MARGIN, MCF7_CHANNELS as channels, MCF7_CLASSES as classes, MCF7Params, _place
        from .data.mcf7 import simulate_mcf7_image as simulate
        params = MCF7Params()

        def placed(rng, cls):
            return _place(rng, params, cls, params.size + 2 * _MARGIN)
    else:
        from .data.yeast import _MARGIN, YEAST_CHANNELS as channels, YEAST_CLASSES as classes, YeastParams
        from .data.yeast import _place_cells, simulate_yeast_image as simulate
        params = YeastParams(size=512)

        def placed(rng, cls):
            return _place_cells(rng, params, params.size + 2 * _MARGIN)
    out = []
    for k, cls in enumerate(classes):
        for i in range(per_class):
            image, _ = simulate(cls, np.random.default_rng([seed, k, i]), params)
            cells = placed(np.random.default_rng([seed, k, i]), cls)  # the simulator's first draws from the seed
            inside = sum(1 for c in cells if _MARGIN <= c.cy < _MARGIN + params.size
                         and _MARGIN <= c.cx < _MARGIN + params.size)
            out.append((cls, image[channels.index(channel)], inside))
    return out


def validate(simulator: str, channel: str, diameter: float, *, per_class: int = 4, seed: int = 9) -> dict:
    from milcnn.process.cells import count_cells

    fields = simulated_counts(simulator, per_class=per_class, seed=seed, channel=channel)
    t0 = time.perf_counter()
    counted = [count_cells(plane, diameter) for _, plane, _ in fields]
    ms = (time.perf_counter() - t0) / len(fields) * 1000
    ratio = np.array(counted) / np.array([truth for _, _, truth in fields])
    return {"against": f"python -m training.simulate {simulator}: the cells whose centre lies in the field",
            "fields": len(fields), "seeds": f"[{seed}, class, 0..{per_class - 1}]",
            "median_ratio": round(float(np.median(ratio)), 3),
            "p10_p90_ratio": [round(float(v), 3) for v in np.percentile(ratio, (10, 90))],
            "ms_per_field": round(ms, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.cells", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--simulator", choices=("mcf7", "yeast"), required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--diameter", type=float, required=True, help="object diameter in px at the network's scale")
    parser.add_argument("--objects", choices=("nuclei", "cells"), default="cells")
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--version", required=True, help="the folder's new version (a minor release: new block)")
    args = parser.parse_args(argv)
    from milcnn.model.config import read_config
    from milcnn.process.cells import CellCounting

    from .model_card import update_folder

    checked = validate(args.simulator, args.channel, args.diameter, per_class=args.per_class, seed=args.seed)
    config = read_config(args.folder)
    block = CellCounting(args.channel, args.diameter, args.objects, checked).to_dict()
    CellCounting.from_dict(block, channels=tuple(config["channels"]))
    written = update_folder(args.folder, cells=block, version=args.version)
    repin(args.folder.resolve(), written)
    print(f"{args.folder}: cells {block}")
    return 0


def repin(folder: Path, written: dict) -> None:
    """The zoo registry's entry for ``folder`` (if it is one of the zoo's) pinned to the config just written."""
    from milcnn.model.checksums import sha256_of
    from milcnn.model.registry import read_registry, write_registry

    zoo = ROOT / "zoo"
    if folder.parent != zoo.resolve():
        return
    registry = read_registry(zoo / "registry.json")
    entry = registry.get(folder.name)
    if entry is None:
        return
    registry[folder.name] = replace(entry, revision=f"v{written['version']}",
                                    config_sha256=sha256_of(folder / "config.json"))
    write_registry(zoo / "registry.json", registry)


if __name__ == "__main__":
    sys.exit(main())
