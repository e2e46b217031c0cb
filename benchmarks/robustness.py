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


@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]
    expect: str  # "predicted", or a fragment of the error line
    model: str = "yeast-loc"
    args: list[str] = field(default_factory=list)
    note: str = ""


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
         "predicted", note="normalises to zeros: a label with low confidence and an empty mask"),
    Case("image below the minimum size (20 x 30)", _tif(lambda: _sample()[:, :20, :30], photometric="minisblack"),
         "predicted", note="padded with background to 64 px, outputs cropped back"),
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
    message = lines[0].replace(str(path), path.name) if lines else ""  # the temporary folder is not news
    message = message.split(": ", 1)[1] if message else ""
    return {"exit_code": result.exit_code, "predicted": predicted, "message": message,
            "warnings": [str(w.message) for w in caught], "traceback": "Traceback" in stderr,
            "exception": repr(result.exception) if result.exception and result.exit_code not in (0, 1, 2) else None}


def outcome_matches(case: Case, r: dict) -> bool:
    if case.expect == "predicted":
        return r["exit_code"] == 0 and r["predicted"]
    return r["exit_code"] in (1, 2) and not r["predicted"] and case.expect in r["message"] and not r["traceback"]


def render(results: list[tuple[Case, dict]]) -> str:
    lines = ["# Robustness: what milzoo does with awkward input", "",
             "Made by `python -m benchmarks.robustness`; `tests/test_robustness.py` checks every row. Each input",
             "is one file given to `milzoo predict FILE --out DIR` (model `yeast-loc`, channels gfp, rfp, unless",
             "the row says otherwise). A failed file gets this one line on stderr (no traceback unless `--debug`)",
             "and a row in `DIR/errors.csv`; in a batch the other files are still predicted. Exit code 0: all",
             "predicted; 1: some files failed; 2: usage error (bad model, nothing to do).", "",
             "| input | model | what happens | exit | message |", "|---|---|---|---|---|"]
    for case, r in results:
        what = "predicted" if r["predicted"] else "refused"
        if case.note:
            what += f": {case.note}"
        message = r["message"].replace("|", "\\|")
        lines.append(f"| {case.name} | `{case.model}` {' '.join(case.args)} | {what} | {r['exit_code']} | {message} |")
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
    from milcnn.io import write_atomic

    results = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            results.append((case, run_case(case, Path(tmp))))
    bad = [case.name for case, r in results if not outcome_matches(case, r)]
    with write_atomic(args.out, "w") as fh:
        fh.write(render(results))
    print(render(results))
    if bad:
        print(f"unexpected outcome: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
