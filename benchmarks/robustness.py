"""The bad-input matrix: what ``milzoo predict`` does with each kind of awkward input.

Usage (the command behind docs/robustness.md)::

    python -m benchmarks.robustness

Each case makes one input file, runs ``milzoo predict FILE --out DIR`` with the default
``yeast-loc`` model (gfp, rfp) or the one-channel ``yeast-loc-gfp``, and records the exit code,
whether a prediction was written, and the one line on stderr. ``tests/test_robustness.py``
runs the same cases and checks each against its expected outcome.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "zoo" / "yeast-loc" / "sample_input.tif"  # uint16, (2, 512, 512)


def _sample() -> np.ndarray:
    import tifffile

    return tifffile.imread(SAMPLE)


def _tif(array, **kwargs) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import tifffile

        path = folder / "image.tif"
        tifffile.imwrite(path, array() if callable(array) else array, **kwargs)
        return path
    return make


def _bytes(name: str, data: Callable[[], bytes] | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path
    return make


def _pil(name: str, array: Callable[[], np.ndarray], **save) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from PIL import Image

        path = folder / name
        Image.fromarray(array()).save(path, **save)
        return path
    return make


def _truncated() -> bytes:
    return SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 2]


def _with_nan() -> np.ndarray:
    x = _sample().astype(np.float32)
    x[0, :50, :50] = np.nan
    x[1, 100:110, :] = np.inf
    return x


def _rgb(dtype=np.uint8) -> np.ndarray:
    s = _sample()
    return np.stack([s[1], s[0], s[1]], axis=-1).astype(np.float64).__truediv__(s.max() / 255).astype(dtype)


def _png_bomb(folder: Path) -> Path:
    """A 27-byte-body PNG whose header declares 15000 x 15000 pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path = folder / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 15001 * 64)) + chunk(b"IEND", b""))
    return path


def _sparse_tiff(folder: Path) -> Path:
    """A 100000 x 100000 uncompressed TIFF stored sparsely (10 GB declared, a few KB on disk)."""
    import tifffile

    path = folder / "image.tif"
    tifffile.imwrite(path, shape=(100000, 100000), dtype="uint8")
    return path


def _zlib_bomb(folder: Path) -> Path:
    """A zlib-tiled TIFF of zeros: about 0.6 MB that decompresses to 24000 x 24000 x 2 bytes (1.15 GB)."""
    import tifffile

    tile = np.zeros((1024, 1024), np.uint16)
    path = folder / "image.tif"
    tifffile.imwrite(path, (tile for _ in range(24 * 24)), shape=(24000, 24000), dtype="uint16", tile=(1024, 1024),
                     compression="zlib", photometric="minisblack")
    return path


def _pillow_tiff(compression: str) -> Callable[[Path], Path]:
    """A two-page (gfp, rfp) TIFF compressed by Pillow's libtiff, as microscope software writes them."""
    def make(folder: Path) -> Path:
        from PIL import Image

        s = _sample()
        pages = [Image.fromarray(p if compression != "jpeg" else (p // 257).astype(np.uint8)) for p in s]
        path = folder / "image.tif"
        pages[0].save(path, compression=compression, save_all=True, append_images=pages[1:])
        return path
    return make


def _non_latin_name(folder: Path) -> Path:
    import tifffile

    path = folder / "細胞_клетка_خلية.tif"
    tifffile.imwrite(path, _sample(), photometric="minisblack")
    return path


def _fifo(folder: Path) -> Path:
    import os

    path = folder / "image.tif"
    os.mkfifo(path)
    return path


def _symlink_loop(folder: Path) -> Path:
    path = folder / "image.tif"
    path.symlink_to(folder / "other.tif")
    (folder / "other.tif").symlink_to(path)
    return path


def _folder_with_a_folder_named_tif(folder: Path) -> Path:
    import tifffile

    inputs = folder / "plate"
    (inputs / "image.tif").mkdir(parents=True)
    tifffile.imwrite(inputs / "good.tif", _sample(), photometric="minisblack")
    return inputs


def _many_series(n: int = 20000) -> Callable[[Path], Path]:
    """A TIFF of ``n`` one-page series (tifffile's parsing of them grows faster than ``n``: 32 s for 20,000)."""
    def make(folder: Path) -> Path:
        import tifffile

        path = folder / "image.tif"
        with tifffile.TiffWriter(path) as tif:
            for i in range(n):
                tif.write(_sample()[:, :64, :64] if i == 0 else np.zeros((4, 4), np.uint8))
        return path
    return make


def _zarr_plate(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> Callable[[Path], Path]:
    """A one-well OME-Zarr plate (NGFF 0.4) whose one field declares ``shape`` (channels gfp, rfp) in
    ``chunks``: a few KB on disk whatever it declares (no chunk is written)."""
    def make(folder: Path) -> Path:
        import zarr

        path = folder / "plate.zarr"
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        root.attrs["plate"] = {"version": "0.4", "name": "p", "rows": [{"name": "A"}], "columns": [{"name": "1"}],
                               "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0}]}
        well = root.require_group("A").require_group("1")
        well.attrs["well"] = {"version": "0.4", "images": [{"path": "0"}]}
        image = well.create_group("0")
        image.create_array("0", shape=shape, chunks=chunks, dtype="uint16")
        image.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}],
                                       "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                                                {"name": "x", "type": "space"}]}]
        image.attrs["omero"] = {"version": "0.4", "channels": [{"label": "gfp"}, {"label": "rfp"}]}
        return path
    return make


@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]
    expect: str  # "predicted", or a fragment of the error line
    model: str = "yeast-loc"
    args: list[str] = field(default_factory=list)
    note: str = ""
    others_predicted: bool = False  # the input is a folder whose other, good image must be predicted
    qc: str | None = None  # a predicted image's qc (predictions.csv), where the case says what it must be


CASES = [
    Case("zero-byte file", _bytes("image.tif", b""), "file is empty (0 bytes)"),
    Case("truncated TIFF (first half of a valid file)", _bytes("image.tif", _truncated), "not a readable TIFF"),
    Case("a text file named .tif", _bytes("image.tif", b"plate,well\nA01,1\n"), "not a readable TIFF"),
    Case("unsupported format (.czi)", _bytes("image.czi", b"ZISRAWFILE"), "unsupported file type '.czi'"),
    Case("3 channels for a 2-channel model", _tif(lambda: np.concatenate([_sample(), _sample()[:1]]),
                                                   photometric="minisblack"),
         "the model needs 2 channels (gfp, rfp, in that order)"),
    Case("1 channel for a 2-channel model", _tif(lambda: _sample()[0]), "has 1 channel but the model needs 2"),
    Case("Z stack (Z, C, Y, X)", _tif(lambda: np.stack([_sample()] * 5), photometric="minisblack"),
         "has 4 dimensions"),
    Case("time series of one channel (T, Y, X) for the gfp model", _tif(lambda: np.stack([_sample()[0]] * 7)),
         "a Z stack or time series: save one plane", model="yeast-loc-gfp"),
    Case("ambiguous axes (2, 512, 2)", _tif(lambda: _sample()[:, :, :2], photometric="minisblack"),
         "is ambiguous"),
    Case("ambiguous axes resolved with --channel-axis 0", _tif(lambda: _sample()[:, :, :2].repeat(40, axis=2),
                                                                photometric="minisblack"),
         "predicted", args=["--channel-axis", "0"]),
    Case("channels last (Y, X, C)", _tif(lambda: np.moveaxis(_sample(), 0, -1)), "predicted"),
    Case("8-bit integers", _tif(lambda: (_sample() // 257).astype(np.uint8), photometric="minisblack"), "predicted"),
    Case("16-bit integers", _tif(_sample, photometric="minisblack"), "predicted"),
    Case("32-bit signed integers", _tif(lambda: _sample().astype(np.int32), photometric="minisblack"), "predicted"),
    Case("32-bit floats", _tif(lambda: _sample().astype(np.float32), photometric="minisblack"), "predicted"),
    Case("64-bit floats", _tif(lambda: _sample().astype(np.float64), photometric="minisblack"), "predicted"),
    Case("bool", _tif(lambda: _sample() > np.median(_sample()), photometric="minisblack"), "predicted"),
    Case("NaN and Inf pixels", _tif(_with_nan, photometric="minisblack"), "predicted",
         note="non-finite pixels become the low percentile (0 after normalisation), with a warning"),
    Case("constant image", _tif(lambda: np.full((2, 256, 256), 100, np.uint16), photometric="minisblack"),
         "predicted", note="normalises to zeros, an empty mask; qc no_cells, label unassigned", qc="no_cells"),
    Case("image below the minimum size (20 x 30)", _tif(lambda: _sample()[:, :20, :30], photometric="minisblack"),
         "predicted", note="padded with background to 64 px, outputs cropped back; qc too_small, label unassigned",
         qc="too_small"),
    Case("4096 x 4096 field (over the tiling threshold)", _tif(lambda: np.tile(_sample(), (1, 8, 8)),
                                                               photometric="minisblack"),
         "predicted", note="run in 1024 px tiles with a receptive-field margin: memory stays bounded "
                           "(8192 x 8192 peaks at 1.9 GB, BENCHMARKS.md) and the result equals whole-image inference"),
    Case("RGB PNG for a 2-channel model", _pil("image.png", _rgb), "an RGB or 3-channel image"),
    Case("RGB JPEG for a 2-channel model", _pil("image.jpg", _rgb, quality=90), "an RGB or 3-channel image"),
    Case("grey 8-bit PNG, gfp model", _pil("image.png", lambda: (_sample()[0] // 257).astype(np.uint8)), "predicted",
         model="yeast-loc-gfp"),
    Case("16-bit PNG, gfp model", _pil("image.png", lambda: _sample()[0].astype(np.uint16)), "predicted",
         model="yeast-loc-gfp"),
    Case("OME-TIFF with channel names", _tif(_sample, ome=True, photometric="minisblack",
                                             metadata={"axes": "CYX", "Channel": {"Name": ["gfp", "rfp"]}}),
         "predicted", note="read in its stored channel order"),
    Case("PNG declaring 15000 x 15000 pixels (a 27 KB decompression bomb)", _png_bomb, "over the budget"),
    Case("sparse TIFF declaring 100000 x 100000 pixels (10 GB)", _sparse_tiff, "over the budget",
         note="refused from its header, before any pixel is read"),
    Case("zlib-tiled TIFF of 0.6 MB that decompresses to 1.15 GB (24000 x 24000)", _zlib_bomb, "over the budget",
         note="too large to read whole, and its planes are over what a tile-at-a-time read may produce"),
    Case("LZW-compressed TIFF (Pillow / libtiff)", _pillow_tiff("tiff_lzw"), "predicted",
         note="read through Pillow when tifffile lacks the codec"),
    Case("zstd-compressed TIFF", _pillow_tiff("zstd"), "predicted"),
    Case("deflate-compressed TIFF", _pillow_tiff("tiff_adobe_deflate"), "predicted"),
    Case("PackBits-compressed TIFF", _pillow_tiff("packbits"), "predicted"),
    Case("JPEG-compressed 8-bit TIFF", _pillow_tiff("jpeg"), "predicted"),
    Case("non-Latin file name, overlays on", _non_latin_name, "predicted",
         note="the overlay's title shows other scripts as \\\\uXXXX escapes"),
    Case("TIFF of 20,000 one-page series", _many_series(), "holds more than 1,024 pages",
         note="refused from its page count, before tifffile parses its series"),
    Case("OME-Zarr plate whose field declares 2 x 30000 x 30000 (1 KB on disk)", _zarr_plate((2, 30000, 30000),
                                                                                            (1, 512, 512)),
         "over the 134,217,728 an image may take", note="refused from its metadata, before any chunk is read"),
    Case("OME-Zarr field of 2 x 512 x 512 stored in 20000 x 20000 chunks", _zarr_plate((2, 512, 512),
                                                                                      (1, 20000, 20000)),
         "declares chunks of 400,000,000 values", note="a chunk is decoded whole: refused from its metadata"),
    Case("a FIFO named image.tif", _fifo, "not a regular file (a FIFO)"),
    Case("a symbolic link loop named image.tif", _symlink_loop, "a symbolic link that leads nowhere"),
    Case("a folder named image.tif inside an input folder (beside a good image)", _folder_with_a_folder_named_tif,
         "not a regular file (a folder)", note="the good image is predicted; exit 1", others_predicted=True),
    Case("model name with '..'", _tif(_sample, photometric="minisblack"), "unknown model '../yeast-loc'",
         model="../yeast-loc"),
    Case("model name with path separators", _tif(_sample, photometric="minisblack"), "unknown model 'a/b/c'",
         model="a/b/c"),
]


def run_case(case: Case, folder: Path) -> dict:
    """Run ``milzoo predict`` on the case's file; returns exit code, stderr line, and outputs."""
    from click.testing import CliRunner

    from milcnn.cli import main

    path = case.make(folder)
    out = folder / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["predict", str(path), "--out", str(out), "--model", case.model,
                                           *case.args])
    stderr = result.stderr if hasattr(result, "stderr") else result.output
    lines = [line for line in stderr.splitlines() if line.startswith("milzoo: ") or line.startswith("Error: ")]
    predicted = (out / "predictions.csv").is_file() and len((out / "predictions.csv").read_text().splitlines()) == 2
    qc = None
    if predicted:
        import csv

        with open(out / "predictions.csv", newline="") as fh:
            row = next(csv.DictReader(fh))
        qc = (row["qc"], row["label"])
    message = lines[0].replace(str(path), path.name) if lines else ""  # the temporary folder is not news
    message = message.split(": ", 1)[1] if message else ""
    return {"exit_code": result.exit_code, "predicted": predicted, "message": message, "qc": qc,
            "warnings": [str(w.message) for w in caught], "traceback": "Traceback" in stderr,
            "exception": repr(result.exception) if result.exception and result.exit_code not in (0, 1, 2) else None}


def run_batch(folder: Path) -> dict:
    """``milzoo predict`` on good images mixed with one of each bad input for the default model, in a
    child process whose peak memory (max RSS) is measured. Returns the counts, exit code and peak."""
    import csv

    import tifffile

    bad = [c for c in CASES if c.expect != "predicted" and c.model == "yeast-loc" and not c.args]
    inputs, good = [], []
    for i, case in enumerate(bad):
        (folder / f"bad{i:02d}").mkdir()
        path = case.make(folder / f"bad{i:02d}")
        inputs.append(path)
        if case.others_predicted:
            good.append(path / "good.tif")
    for i in range(3):
        path = folder / f"good{i}.tif"
        tifffile.imwrite(path, np.roll(_sample(), 50 * i, axis=2), photometric="minisblack")
        good.append(path)
    out = folder / "out"
    code, _, peak = _child([*map(str, inputs + good[-3:]), "--out", str(out)], folder, timeout=900)
    err = (folder / "stderr.txt").read_text()
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        predicted = {row["image"] for row in csv.DictReader(fh)}
    with open(out / "errors.csv", newline="", encoding="utf-8") as fh:
        errors = list(csv.DictReader(fh))
    return {"exit_code": code, "traceback": "Traceback" in err, "stderr_tail": err[-3000:],
            "good": len(good), "bad": len(bad), "predicted": len(predicted & {str(p) for p in good}),
            "error_rows": len(errors), "one_line_errors": all("\n" not in row["error"] for row in errors),
            "peak_mb": peak}


def _model_with_config(make_config: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A copy of the zoo's ``yeast-loc`` folder whose ``config.json`` ``make_config`` replaces."""
    def make(folder: Path) -> Path:
        import shutil

        model = shutil.copytree(ROOT / "zoo" / "yeast-loc", folder / "model")
        (model / "config.json").unlink()
        make_config(model / "config.json")
        return model
    return make


def _huge_min_size(path: Path) -> None:
    import json

    from milcnn.model.config import content_sha256

    config = json.loads((ROOT / "zoo" / "yeast-loc" / "config.json").read_text())
    config["min_size"] = 20000
    config["checksum"] = f"sha256:{content_sha256(config)}"
    path.write_text(json.dumps(config))


#: model folders refused at load (``--model FOLDER``): the whole run is what they cost
MODEL_CASES = [
    ("config.json that is a FIFO", _model_with_config(lambda p: __import__("os").mkfifo(p))),
    ("config.json that is a link to /dev/zero", _model_with_config(lambda p: p.symlink_to("/dev/zero"))),
    ("config.json with min_size 20000", _model_with_config(_huge_min_size)),
]


# runs ``milzoo predict`` and reports its exit code, wall time and peak memory; this small process is the
# child's parent because Linux counts the memory of the process that forks a child in the child's max RSS
_MEASURE = """import json, os, subprocess, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], "w") as err:
    proc = subprocess.Popen([sys.executable, "-m", "milcnn.cli", "predict", *sys.argv[2:]],
                            stdout=subprocess.DEVNULL, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss / 1024]))
"""


def _child(args: list[str], folder: Path, *, timeout: float = 600) -> tuple[int, float, float]:
    """``milzoo predict ARGS`` in a child process: its exit code, wall seconds and peak memory (max RSS, MB)."""
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(folder / "stderr.txt"), *args], capture_output=True,
                          text=True, timeout=timeout, check=True)
    return tuple(json.loads(proc.stdout))


def run_costs(folder: Path, repeats: int = 3) -> dict:
    """What a refused input costs: ``milzoo predict GOOD BAD`` against ``milzoo predict GOOD`` (the
    model's good sample alone, the median of ``repeats`` runs), each in a child process, for every refused
    input of ``CASES``; and the whole run for a model folder refused at load (``MODEL_CASES``).

    Returns:
        {"baseline": {model: (seconds, peak MB)}, "inputs": [(name, exit, extra seconds, peak MB)],
        "models": [(name, exit, seconds, peak MB)]}.
    """
    import statistics

    import tifffile

    refused = [c for c in CASES if c.expect != "predicted" and not c.others_predicted and
               c.model in ("yeast-loc", "yeast-loc-gfp")]
    good = {"yeast-loc": folder / "good2.tif", "yeast-loc-gfp": folder / "good1.tif"}
    tifffile.imwrite(good["yeast-loc"], _sample(), photometric="minisblack")
    tifffile.imwrite(good["yeast-loc-gfp"], _sample()[0])
    baseline = {}
    for model, path in good.items():
        runs = [_child([str(path), "--out", str(folder / f"base{i}"), "--model", model], folder)
                for i in range(repeats)]
        baseline[model] = (statistics.median(r[1] for r in runs), max(r[2] for r in runs))
    inputs = []
    for i, case in enumerate(refused):
        (folder / f"in{i}").mkdir()
        bad = case.make(folder / f"in{i}")
        code, seconds, peak = _child([str(good[case.model]), str(bad), "--out", str(folder / f"out{i}"),
                                      "--model", case.model, *case.args], folder)
        inputs.append((case.name, code, seconds - baseline[case.model][0], peak))
    models = []
    for i, (name, make) in enumerate(MODEL_CASES):
        (folder / f"model{i}").mkdir()
        model = make(folder / f"model{i}")
        code, seconds, peak = _child([str(good["yeast-loc"]), "--out", str(folder / f"mout{i}"), "--model",
                                      str(model)], folder)
        models.append((name, code, seconds, peak))
    return {"baseline": baseline, "inputs": inputs, "models": models}


def run_thin(folder: Path, length: int = 4_000_000) -> dict:
    """``milzoo predict`` on a two-channel 1 x ``length`` image (tiled along its length; its overlay scaled to
    the overlay budget), in a child process: exit code, seconds and peak memory."""
    import tifffile

    path = folder / "thin.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 4000, (2, 1, length), dtype=np.uint16),
                     photometric="minisblack")
    code, seconds, peak = _child([str(path), "--out", str(folder / "out")], folder)
    return {"length": length, "exit_code": code, "seconds": seconds, "peak_mb": peak}


def run_large(folder: Path, side: int = 16384) -> dict:
    """``milzoo predict`` on a two-channel ``side`` x ``side`` uint16 zlib-tiled TIFF (over the budget, so
    read a tile at a time), in a child process whose peak memory and wall time are measured."""

    import tifffile

    sample = _sample()
    tile = np.concatenate([np.concatenate([sample, sample[:, ::-1]], axis=2)] * 2, axis=1)  # 2 x 1024 x 1024
    n = side // 1024
    path = folder / "large.tif"
    tifffile.imwrite(path, (np.roll(tile[c], 97 * k, axis=1) for c in range(2) for k in range(n * n)),
                     shape=(2, side, side), dtype="uint16", tile=(1024, 1024), compression="zlib",
                     photometric="minisblack")
    code, seconds, peak = _child([str(path), "--out", str(folder / "out")], folder, timeout=3600)
    return {"side": side, "file_mb": path.stat().st_size / 2**20, "raw_mb": 2 * side * side * 2 / 2**20,
            "exit_code": code, "peak_mb": peak, "seconds": seconds,
            "stderr_tail": (folder / "stderr.txt").read_text()[-2000:]}


def outcome_matches(case: Case, r: dict) -> bool:
    if case.expect == "predicted":
        qc_right = case.qc is None or r["qc"] == (case.qc, "unassigned")
        return r["exit_code"] == 0 and r["predicted"] and qc_right
    if case.others_predicted:
        return r["exit_code"] == 1 and r["predicted"] and case.expect in r["message"] and not r["traceback"]
    return r["exit_code"] in (1, 2) and not r["predicted"] and case.expect in r["message"] and not r["traceback"]


def render_costs(costs: dict) -> list[str]:
    from benchmarks.machine import cpu_description

    base = costs["baseline"]
    lines = ["", "## What a refused input costs", "",
             f"`run_costs` on {cpu_description()}: each refused input above, given to `milzoo predict` after "
             "the model's good sample, in a child process, against the good sample alone (median of 3 runs: "
             + ", ".join(f"`{m}` {s:.2f} s, peak {mb:.0f} MB" for m, (s, mb) in base.items())
             + "). Targets: under 1 s and a peak under 300 MB for any refused input.", "",
             "| refused input | exit | extra seconds | peak MB |", "|---|---|---|---|"]
    lines += [f"| {name} | {code} | {extra:+.2f} | {peak:.0f} |" for name, code, extra, peak in costs["inputs"]]
    lines += ["", "A model folder refused at load costs the whole run (nothing is predicted):", "",
              "| `--model` folder | exit | seconds | peak MB |", "|---|---|---|---|"]
    lines += [f"| {name} | {code} | {seconds:.2f} | {peak:.0f} |" for name, code, seconds, peak in costs["models"]]
    return lines


def render(results: list[tuple[Case, dict]], batch: dict | None = None, large: dict | None = None,
           costs: dict | None = None, thin: dict | None = None) -> str:
    lines = ["# Robustness: what milzoo does with awkward input", "",
             "Made by `python -m benchmarks.robustness`; `tests/test_robustness.py` checks every row. Each input",
             "is one file given to `milzoo predict FILE --out DIR` (model `yeast-loc`, channels gfp, rfp, unless",
             "the row says otherwise). A failed file gets this one line on stderr (no traceback unless `--debug`)",
             "and a row in `DIR/errors.csv`; in a batch the other files are still predicted. Exit code 0: all",
             "predicted; 1: some files failed; 2: usage error (bad model, nothing to do) or the output folder",
             "itself failed (see *What is promised under faults*).", "",
             "| input | model | what happens | exit | message |", "|---|---|---|---|---|"]
    for case, r in results:
        what = "predicted" if r["predicted"] and not case.others_predicted else "refused"
        if case.note:
            what += f": {case.note}"
        message = r["message"].replace("|", "\\|")
        lines.append(f"| {case.name} | `{case.model}` {' '.join(case.args)} | {what} | {r['exit_code']} | {message} |")
    if batch is not None:
        lines += ["", "## A batch with one of each bad input", "",
                  f"`run_batch`: {batch['good']} good images and the {batch['bad']} bad inputs above that fail "
                  f"with the default model, in one `milzoo predict` call: {batch['predicted']} of {batch['good']} "
                  f"good images predicted, {batch['error_rows']} rows in `errors.csv` (one per bad input, one line "
                  f"each), exit {batch['exit_code']}, {'a traceback' if batch['traceback'] else 'no traceback'}, "
                  f"peak memory {batch['peak_mb']:.0f} MB (max RSS of the process; target < 1.5 GB). Images are "
                  "refused from their header when they declare more than `MILCNN_MAX_IMAGE_VALUES` values "
                  "(default 2^27, an 8192 x 8192 two-channel image, which peaks near 1.9 GB, see BENCHMARKS.md): "
                  "the bound on what one image may cost."]
    if large is not None:
        lines += ["", "## An image too large to read whole", "",
                  f"`run_large`: a two-channel {large['side']} x {large['side']} uint16 TIFF in zlib-compressed "
                  f"1024 px tiles ({large['file_mb']:.0f} MB on disk, {large['raw_mb']:.0f} MB of pixels) is over "
                  "the budget, so `milzoo predict` reads it a tile at a time (`milcnn.io.lazy`: only the tiles a "
                  "window overlaps are decoded; the normalisation's percentiles come from histograms added up "
                  f"tile by tile, exactly the whole image's): exit {large['exit_code']}, peak memory "
                  f"{large['peak_mb']:.0f} MB, {large['seconds']:.0f} s on this machine's CPU with the mask and "
                  "the overlay (drawn from every f-th pixel). The input costs a tile row; the outputs still grow "
                  "with the image (the mask 1 byte per pixel, the class maps 4 bytes x classes / stride^2), so "
                  "planes over `MILCNN_MAX_LAZY_PIXELS` (default 2^29 px, 23170 x 23170) are refused from the "
                  "header. Uncompressed, deflate, LZMA (tifffile's own codecs) and 8- or 16-bit one-page-per-channel "
                  "files are read this way; LZW, JPEG and zstd ones go through Pillow, whole, within the budget."]
    if thin is not None:
        lines += ["", "## A thin image", "",
                  f"`run_thin`: a two-channel 1 x {thin['length']:,} px image is tiled along its length (not padded "
                  "to a block `min_size` rows tall), and its overlay is drawn at a scale that keeps the picture, "
                  f"legend included, within 4096 x 4096 px: exit {thin['exit_code']}, {thin['seconds']:.0f} s, "
                  f"peak memory {thin['peak_mb']:.0f} MB."]
    if costs is not None:
        lines += render_costs(costs)
    lines += ["", "## What is promised under faults", "",
              "- **Kill (SIGKILL, SIGINT, SIGTERM).** Every file is written to a temporary name and renamed; a row "
              "goes to `predictions.csv` only after its mask and overlay are in place. `--resume` deletes the "
              "temporary files, predicts every image without a prediction, those in `errors.csv` included, and "
              "ends with byte-identical outputs to an uninterrupted run (`tests/test_resume.py`).",
              "- **A failure that goes away** (a corrupt file replaced, a disk freed): `--resume` tries the "
              "image again; `errors.csv` keeps only what still fails (and is gone when nothing does).",
              "- **Full disk.** An image whose mask or overlay cannot be written gets its row in `errors.csv`; "
              "when `errors.csv` or `predictions.csv` themselves cannot be written, the run stops with one "
              "line and exit 2, keeping the complete rows before it (a new `errors.csv` is written with its first row, "
              "so none is left holding only its header). Free space and `--resume`.",
              "- **Output folder unusable** (a file, read-only, cannot be created): one line, exit 2, before any "
              "image is read.",
              "- **Concurrent runs.** `milzoo predict` holds an exclusive lock on `--out` (`OUT/.milzoo.lock`, "
              "released when the process ends, killed or not); a second run into the same folder is refused "
              "with one line naming the holder's PID, and touches nothing.",
              "- **Power cut.** Not promised: masks, overlays and rows are not fsynced one by one (an fsync per "
              "image costs more than writing it), so the last seconds of results may be missing or empty "
              "after a power cut. Re-run with `--overwrite` if the machine lost power mid-run.",
              "- **Hostile model folders.** `config.json` over 1 MB, not a regular file (a FIFO, `/dev/zero`), "
              "edited since it was written (its checksum), with a class count that differs from the "
              "model's outputs, an output stride that is not a positive power of two, a `min_size` over 4096, or "
              "a variant file outside the folder is refused at load in one line; a model file over 2 GB (more "
              "than a self-contained ONNX file can hold) is refused before it is hashed, and every model file "
              "with a recorded "
              "sha256 is checked.",
              "- **A Dask scheduler that never answers.** `--scheduler ADDRESS` where something accepts the "
              "connection but sends no Dask handshake fails in one line after 30 s (`CONNECT_TIMEOUT_S`), exit 2; "
              "Dask's own client would wait for that handshake forever (`tests/test_distributed.py`).",
              "- **Nothing written outside `--out`** (`tests/test_hostile.py`): output names are built from "
              "sanitised components (no separator, no leading dot, at most 180 bytes, a hash where cut), unique "
              "across the run (case included), and a `masks` / `overlays` folder or `.milzoo.lock` that is a "
              "planted link is refused, its target untouched. OME-Zarr well and image paths that leave the plate, "
              "and row or column indices outside its lists, are refused with one line; a field that declares "
              "more values than `MILCNN_MAX_IMAGE_VALUES` (or chunks that large) is refused from its metadata.",
              "- **Any file name.** Bytes that are not UTF-8 are written escaped (`\\udcff`) in the CSVs and "
              "output names, and `--resume` finds them; `field[1].tif` is a file, not a glob; an `--out` inside "
              "an input folder is not read back as input; 1536-well rows (`AA`..`AF`) are located and drawn.",
              "- **Tables.** A plate map or manifest with a missing value, an oversized cell, or one well or image "
              "given twice with different values is refused in one line naming the file and line; a "
              "`--well-pattern` whose match is not a well stops before any image is predicted.",
              "- **Spreadsheet formulas.** `predictions.csv` and the other CSVs hold values as they are: a cell "
              "that starts with `=`, `+`, `-` or `@` (a file name, a manifest column) is not altered, because "
              "the files are data for programs and for `--resume`, which must read back exactly what was written. "
              "Open them in a spreadsheet as text (import, column type text), not by double-click."]
    lines += ["", "Also tested elsewhere: tiled and whole-image results agree (`tests/test_inference.py`);",
              "a batch mixing good and bad files, interrupted with SIGINT or SIGKILL and resumed, ends with",
              "exactly the outputs of an uninterrupted run (`tests/test_resume.py`); random bytes and random",
              "arrays through the reading and pre-processing path raise only the errors above",
              "(`tests/test_fuzz.py`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "robustness.md")
    args = parser.parse_args(argv)
    from milcnn.io.images import write_atomic

    results = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            results.append((case, run_case(case, Path(tmp))))
    with tempfile.TemporaryDirectory() as tmp:
        batch = run_batch(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        large = run_large(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        costs = run_costs(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        thin = run_thin(Path(tmp))
    bad = [case.name for case, r in results if not outcome_matches(case, r)]
    if large["exit_code"] != 0:
        bad.append("large")
    if batch["exit_code"] != 1 or batch["traceback"] or batch["predicted"] != batch["good"]:
        bad.append("batch")
    worst = max(costs["inputs"] + costs["models"], key=lambda r: r[3])
    if worst[3] >= 300 or max(r[2] for r in costs["inputs"]) >= 1:
        bad.append("costs")
    if thin["exit_code"] != 0 or thin["peak_mb"] >= 300:
        bad.append("thin")
    text = render(results, batch, large, costs, thin)
    with write_atomic(args.out, "w") as fh:
        fh.write(text)
    print(text)
    if bad:
        print(f"unexpected outcome: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
