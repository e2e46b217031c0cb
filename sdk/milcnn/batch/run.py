"""The ``milzoo predict`` job: inputs to an output folder of results, with provenance, progress and
resumption. ``milcnn.cli`` parses the flags; ``milcnn.batch.pipeline`` runs the images; this module decides
what to run, what each row says, and what the folder records.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import sys
import time
import traceback
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from milcnn import constants
from milcnn.process.decision import UNASSIGNED, decide
from milcnn.io.images import PIL_SUFFIXES, TIFF_SUFFIXES, write_atomic
from milcnn.io.omezarr import ZarrField, is_plate, plate_fields
from milcnn.errors import OutputFolderError, ProvenanceError
from milcnn.outputs.results import ResultsFolder, output_stems
from milcnn.predict.options import PredictOptions

__all__ = ["BatchOptions", "run_batch", "expand_inputs", "prediction_row", "UNASSIGNED", "RUN_FILE",
           "ProvenanceError"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES
RUN_FILE = "run.json"
PROGRESS_SECONDS = 30.0  # a progress line this often when stderr is not a terminal
REPEATS_SHOWN = 3  # a message repeated for many files is shown this many times, then counted


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """What ``milzoo predict`` was asked to do, besides the model and the inputs: how each image is
    predicted (``predict``, a ``PredictOptions``) and how the run goes."""

    predict: PredictOptions = field(default_factory=PredictOptions)
    argmax: bool = False
    workers: int = constants.DEFAULT_WORKERS
    streams: int | None = None
    batch_size: int = 1
    overlays: bool = True
    resume: bool = False
    overwrite: bool = False
    debug: bool = False
    recursive: bool = False
    channels: tuple[str, ...] = ()  # --channel NAME=GLOB (or NAME=<n> with a layout)
    layout: str | None = None
    well_pattern: str | None = None
    plate_map: Path | None = None
    write_labels: bool = False  # OME-Zarr plates: write each field's mask as the label image labels/milcnn
    manifest: Path | None = None  # inputs from a CSV (path or path_<channel>), its other columns carried
    command: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(cls, **settings) -> "BatchOptions":
        """Options from flat keywords: ``PredictOptions``'s fields go to ``predict``, the rest are this class's."""
        names = {f.name for f in fields(PredictOptions)}
        predict = PredictOptions(**{k: v for k, v in settings.items() if k in names})
        return cls(predict=predict, **{k: v for k, v in settings.items() if k not in names})


def expand_inputs(inputs, *, recursive: bool = False) -> tuple[list[Path], list[str], int, dict[Path, Path]]:
    """Files, folders (their images, sorted) and globs -> (image paths, inputs that matched nothing,
    images in subfolders that were skipped because ``recursive`` is off, the input folder of each image
    found in one).

    Entries with an image suffix that are not regular files (a folder named ``x.tif``, a FIFO, a broken
    or looping link) are kept, so that each is reported as a failed image instead of being skipped
    without a word."""
    found, missing, skipped, roots = [], [], 0, {}
    for item in inputs:
        item = str(item)
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            files = [p for p in matches if p.is_file() or _looks_like_image(p)]
            found += files
            if not files:
                missing.append(item)
        elif Path(item).is_dir() and is_plate(item):  # an OME-Zarr HCS plate: its fields
            found += plate_fields(item)
        elif Path(item).is_dir():
            top = Path(item)
            if recursive:
                inside = sorted((p for p in top.rglob("*") if _looks_like_image(p)), key=lambda p: p.parts)
            else:
                inside = sorted(p for p in top.iterdir() if _looks_like_image(p))
                skipped += sum(1 for p in top.rglob("*") if p.parent != top and _looks_like_image(p)
                               and p.is_file())
            found += inside
            roots.update((p, top) for p in inside)
        elif Path(item).exists() or Path(item).is_symlink():
            found.append(Path(item))
        else:
            missing.append(item)
    seen, unique = set(), []
    for p in found:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop: keep it, reading it will say what it is
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, missing, skipped, roots


def _looks_like_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def prediction_row(image: str, pred, classes, *, threshold: float, argmax: bool = False, multi_label: bool = False,
                   location=None) -> list:
    """A ``predictions.csv`` row (``header``): image, plate, well, field, label, [labels,] qc, scale_source,
    max_probability, p_<class>..., area_<class>... (the fraction of the image each class's mask covers).
    The label is ``milcnn.process.decision.decide``'s: the top class where its probability reaches ``threshold``
    (or any, with ``argmax``) and qc is ``ok``, else ``unassigned``; multi-label models also list every
    class at or above ``threshold`` (``labels``)."""
    import numpy as np

    probs = [pred.probabilities[c] for c in classes]
    call = decide(probs, classes, threshold=threshold, multi_label=multi_label, qc=pred.qc, argmax=argmax)
    counts = getattr(pred, "areas", None)  # computed where the mask is (a Dask worker), or here
    if counts is None:
        counts = np.bincount(pred.mask.ravel(), minlength=len(classes) + 1)[1:len(classes) + 1] / max(1, pred.mask.size)
    where = [location.plate, location.well, location.field] if location is not None else ["", "", ""]
    return [image, *where, call.label, *([call.labels] if multi_label else []), pred.qc,
            pred.scale_source, f"{call.probability:.6f}", *[f"{p:.6f}" for p in probs],
            *[f"{a:.6f}" for a in counts]]


def header(classes, multi_label: bool = False) -> list[str]:
    return ["image", "plate", "well", "field", "label", *(["labels"] if multi_label else []), "qc", "scale_source",
            "max_probability", *[f"p_{c}" for c in classes], *[f"area_{c}" for c in classes]]


def read_input_manifest(path: Path, channels: tuple[str, ...], taken: list[str]):
    """Inputs from a manifest in the training format: a ``path`` column (one multi-channel file) or
    ``path_<channel>`` columns (one file per model channel), relative to the manifest's folder.

    Returns:
        (inputs, {input: {column: value}} of the other columns, their names in predictions.csv (a name
        the results already use gets ``manifest_``), {input: Location} where the manifest has a
        ``well`` column).

    Raises:
        ValueError: unreadable, or neither layout of path columns (names the file).
    """
    import csv
    import io

    from milcnn.io.fields import ChannelFiles
    from milcnn.io.locations import Location, parse_well

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"--manifest {path}: cannot read ({exc.strerror or exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    per_channel = [f"path_{c}" for c in channels]
    if all(c in columns for c in per_channel):
        used = per_channel
    elif "path" in columns:
        used = ["path"]
    else:
        raise ValueError(f"--manifest {path}: needs a 'path' column or {', '.join(per_channel)} (has "
                         f"{', '.join(columns) or 'no columns'})")
    place = {"plate", "well", "field"} if "well" in columns else set()
    carried = [c for c in columns if c not in used and not c.startswith("path_") and c != "path" and c not in place]
    names = [f"manifest_{c}" if c in taken else c for c in carried]
    base = Path(path).parent
    inputs, extras, locations = [], {}, {}
    for line, row in enumerate(reader, 2):
        if any(not row.get(c) for c in used):
            raise ValueError(f"--manifest {path}, line {line}: empty {' or '.join(used)}")
        files = [Path(row[c]) if Path(row[c]).is_absolute() else base / row[c] for c in used]
        item = files[0] if len(files) == 1 else ChannelFiles(files[0].with_suffix(""), tuple(files))
        inputs.append(item)
        extras[item] = [row.get(c, "") for c in carried]
        well = parse_well(row.get("well")) if place else None
        if well is not None:
            locations[item] = Location(row.get("plate") or base.name, well, row.get("field") or "")
    return inputs, extras, names, locations


# ---------------------------------------------------------------------------------------- provenance

def provenance(clf, opts: BatchOptions) -> dict:
    """What ``run.json`` records of the model and the settings that decide the results."""
    from milcnn import __version__

    model_file = clf.model.path
    return {"model": {"name": clf.name, "version": clf.info.version, "file": model_file.name,
                      "sha256": clf.info.file_sha256(model_file.name) or _sha256(model_file),
                      "origin": str(getattr(clf.origin, "repo_id", None) or clf.folder)},
            "precision": clf.precision, "backend": clf.model.backend, "threshold": opts.predict.threshold,
            "argmax": opts.argmax, "calibration": clf.info.calibration.method if clf.info.calibration else None,
            "scale": {"pixel_size": opts.predict.pixel_size, "cell_diameter": opts.predict.cell_diameter,
                      "otherwise": "each image's own pixel size where it declares one, else the model's default"
                      if clf.info.pixel_size else "the model's default"},
            "sdk_version": __version__}


def _sha256(path: Path) -> str:
    from milcnn.model.checksums import sha256_of

    return sha256_of(path)


def check_provenance(out: Path, mine: dict) -> dict | None:
    """The previous ``run.json`` of ``out``, after checking it was made as this run will be.

    Raises:
        ProvenanceError: another model (weights), precision or threshold, in one line.
    """
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProvenanceError(f"{path}: unreadable ({exc}); use --overwrite") from None
    then, now = before.get("model", {}), mine["model"]
    differ = []
    if then.get("sha256") != now["sha256"] or then.get("version") != now["version"]:
        differ.append(f"model {then.get('name')} {then.get('version')} (sha256 {str(then.get('sha256'))[:12]}), not "
                      f"{now['name']} {now['version']} ({now['sha256'][:12]})")
    for key in ("precision", "threshold", "argmax"):
        if before.get(key) != mine[key]:
            differ.append(f"{key} {before.get(key)}, not {mine[key]}")
    if differ:
        raise ProvenanceError(f"{out} was made with {'; '.join(differ)}: resume with the same settings, or use "
                              "--overwrite")
    return before


def write_run(out: Path, record: dict) -> None:
    try:
        with write_atomic(out / RUN_FILE, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise OutputFolderError(f"{out / RUN_FILE}: cannot write ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------- progress

class Messages:
    """Per-file messages on stderr: each distinct message (the file name aside) is shown for its first
    ``REPEATS_SHOWN`` files, then only counted; ``summary`` lists the counts."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.counts: dict[str, int] = {}

    def file(self, path, message: str) -> None:
        n = self.counts[message] = self.counts.get(message, 0) + 1
        if n <= REPEATS_SHOWN:
            self.echo(f"milzoo: {path}: {message}")
        if n == REPEATS_SHOWN:
            self.echo(f"milzoo: (further files with this message are counted, not shown: {message})")

    def summary(self) -> list[str]:
        return [f"milzoo: {n} files: {message}" for message, n in self.counts.items() if n > REPEATS_SHOWN]


class Progress:
    """On a terminal, click's bar; elsewhere (a batch or cluster log), one line every
    ``PROGRESS_SECONDS``: images done of total, rate, and time left."""

    def __init__(self, total: int, label: str, *, stream=None, every: float | None = None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.every = PROGRESS_SECONDS if every is None else every
        self.start = self.last = time.monotonic()
        self.bar = None
        if self.stream.isatty():
            import click

            self.bar = click.progressbar(length=total, label=label, file=self.stream, show_pos=True)
            self.bar.__enter__()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.stream.write(f"milzoo: {self.label}: {self.done} of {self.total} images, {rate:.2f} images/s, "
                              f"about {_duration(left)} left\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------- the job

def run_batch(clf, inputs, out_dir: Path, opts: BatchOptions, *, echo: Callable[[str], None],
              runner: Callable | None = None) -> int:
    """Predict ``inputs`` into ``out_dir``; returns the exit code (0 all predicted, 1 some failed,
    130 interrupted).

    ``runner(items, out_dir, opts, on_error=, stems=)`` replaces the local pipeline (``milcnn.batch.pipeline``)
    with another engine that yields ``(item, Prediction or None)`` in input order once the item's files
    are written: ``milcnn.batch.distributed.DaskRunner``.

    Raises:
        ResultsFolderError, OutputFolderError: the folder cannot take these results (exit 2).
        ValueError: no input images.
    """
    from milcnn.outputs.overlay import PALETTE
    from milcnn.batch.pipeline import run_pipeline
    from milcnn.io.locations import locate
    from milcnn.outputs.plates import read_plate_map

    paths, missing, skipped, roots = expand_inputs(inputs, recursive=opts.recursive)
    extras, extra_names, manifest_locations = {}, [], {}
    if opts.manifest is not None:
        listed, extras, extra_names, manifest_locations = read_input_manifest(opts.manifest, clf.channels,
                                                                              header(clf.classes, clf.info.multi_label))
        paths += listed
    try:
        pattern = re.compile(opts.well_pattern) if opts.well_pattern else None
    except re.error as exc:
        raise ValueError(f"--well-pattern {opts.well_pattern!r} is not a regular expression ({exc})") from None
    if pattern is not None and not ({"well"} <= set(pattern.groupindex) or {"row", "col"} <= set(pattern.groupindex)):
        raise ValueError(f"--well-pattern {opts.well_pattern!r} needs a named group 'well', or 'row' and 'col'")
    plate_map = read_plate_map(opts.plate_map) if opts.plate_map else None
    problems: list[tuple[str, str]] = []
    if opts.channels or opts.layout:
        from milcnn.io.fields import channel_rules, group_channels

        rule, mapping = channel_rules(clf.channels, tuple(opts.channels), opts.layout)
        files = paths
        paths, problems, unmatched = group_channels(files, clf.channels, rule, mapping)
        roots = {f: roots[f.files[0]] for f in paths if f.files[0] in roots}
        echo(f"milzoo: {len(files)} files grouped into {len(paths) + len(problems)} fields of "
             f"{len(clf.channels)} channels ({', '.join(clf.channels)})"
             + (f"; {unmatched} files match no channel and are ignored" if unmatched else ""))
        if not paths and not problems:
            raise ValueError("no file matches the channel patterns (--channel / --layout)")
    if skipped:
        echo(f"milzoo: {skipped} images in subfolders were skipped; pass --recursive to include them")
    if not paths and not problems:
        for item in missing:
            echo(f"milzoo: {item}: no such file, folder or matching files")
        raise ValueError("no input images found")
    mine = provenance(clf, opts)
    results = ResultsFolder(out_dir, header(clf.classes, clf.info.multi_label) + extra_names, resume=opts.resume, overwrite=opts.overwrite)
    with results:
        before = check_provenance(out_dir, mine) if opts.resume else None
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {**mine, "command": opts.command, "started": started,
                  "first_started": (before or {}).get("first_started", started), "finished": None,
                  "counts": None}
        write_run(out_dir, record)
        stems = output_stems(paths)
        done = results.done
        todo = [p for p in paths if str(p) not in done]
        predicted, failed = len(paths) - len(todo), 0
        if opts.resume and len(todo) < len(paths):
            echo(f"milzoo: resuming: {len(paths) - len(todo)} of {len(paths)} images already predicted in "
                 f"{out_dir}; {len(todo)} to do")
        messages = Messages(echo)

        def on_error(path, message, exc=None):
            nonlocal failed
            failed += 1
            results.add_error(str(path), message)
            messages.file(path, message)
            if opts.debug and exc is not None:
                traceback.print_exception(exc, file=sys.stderr)

        interrupted = False
        results.retry({str(p) for p in todo} | set(missing) | {name for name, _ in problems})
        for item in missing:
            on_error(item, "no such file, folder or matching files")
        for name, problem in problems:
            on_error(name, problem)
        progress = Progress(len(todo), clf.name)
        t_start, plate_seconds = time.perf_counter(), 0.0
        if runner is not None:
            stream = runner(todo, out_dir, opts, on_error=on_error, stems=stems)
        else:
            stream = run_pipeline(clf, todo, out_dir, opts.predict, workers=opts.workers, streams=opts.streams,
                                  batch_size=opts.batch_size, overlays=opts.overlays, on_error=on_error, stems=stems)
        try:
            for path, pred in stream:
                if pred is not None and opts.write_labels and isinstance(path, ZarrField) and pred.mask is not None:
                    try:
                        path.write_label(pred.mask, clf.classes, PALETTE)
                    except Exception as exc:  # noqa: BLE001 - that field's failure, as any other
                        on_error(path, f"cannot write its label image into the plate ({type(exc).__name__}: {exc})",
                                 exc)
                        pred = None
                if pred is not None:
                    t0 = time.thread_time()  # where the image sits and what its mask covers: the plate's CPU cost
                    where = (manifest_locations.get(path) or getattr(path, "location", None)
                             or locate(path, root=roots.get(path), pattern=pattern))
                    row = prediction_row(str(path), pred, clf.classes, threshold=opts.predict.threshold, argmax=opts.argmax,
                                         multi_label=clf.info.multi_label, location=where) + extras.get(path, [""] * len(extra_names))
                    plate_seconds += time.thread_time() - t0
                    results.add_prediction(row)
                    predicted += 1
                progress.update(1)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.close()
        results.finish(list(missing) + [name for name, _ in problems] + [str(p) for p in paths])
        for line in messages.summary():
            echo(line)
        t0 = time.thread_time()
        rows = _read_rows(out_dir)
        if not interrupted:
            for line in _plate_outputs(out_dir, rows, clf.classes, opts, plate_map, multi_label=clf.info.multi_label):
                echo(line)
        plate_seconds += time.thread_time() - t0
        record.update(finished=None if interrupted else datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      counts={"inputs": len(paths) + len(missing), "predicted": predicted,
                              "failed": failed, "skipped_in_subfolders": skipped, **_row_counts(rows)},
                      seconds={"run": round(time.perf_counter() - t_start, 3),  # wall clock
                               "plate_outputs": round(plate_seconds, 3)})  # CPU time of the plate work
        write_run(out_dir, record)
    echo(f"{predicted} of {len(paths)} images predicted with {clf.name} ({clf.precision}, "
         f"{', '.join(clf.model.providers)}); results in {out_dir}")
    if interrupted:
        echo("milzoo: interrupted; the results so far are complete: continue with --resume")
        return 130
    return 1 if failed else 0


def _read_rows(out: Path) -> list[dict]:
    """The finished ``predictions.csv`` (this run's rows and any resumed ones), read once for the plate outputs
    and ``run.json``'s counts."""
    import csv

    from milcnn.outputs.results import PREDICTIONS

    with open(out / PREDICTIONS, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _row_counts(rows: list[dict]) -> dict:
    """How many rows are ``unassigned``, and have each qc and scale source (for ``run.json``)."""
    from collections import Counter

    return {"unassigned": sum(row["label"] == UNASSIGNED for row in rows),
            "qc": dict(sorted(Counter(row["qc"] for row in rows).items())),
            "scale_source": dict(sorted(Counter(row["scale_source"] for row in rows).items()))}


def _plate_outputs(out: Path, rows: list[dict], classes: tuple[str, ...], opts: BatchOptions, plate_map, *,
                   multi_label: bool = False) -> list[str]:
    """``wells.csv`` and ``plate.png`` (and ``treatments.csv`` with a plate map) from the finished
    ``predictions.csv``'s ``rows``, when its images have wells; the lines to tell the user."""
    from milcnn.outputs.plates import well_table, write_plate_png, write_treatments, write_wells

    table = well_table(rows, classes, threshold=opts.predict.threshold, multi_label=multi_label)
    if not table:
        return []
    try:
        write_wells(out / "wells.csv", table, classes, multi_label=multi_label)
        plates = write_plate_png(out / "plate.png", table, classes)
        lines = [f"milzoo: {len(table)} wells of {len(plates)} plate(s): {out / 'wells.csv'}, {out / 'plate.png'}"]
        if plate_map is not None:
            n = write_treatments(out / "treatments.csv", table, plate_map, classes, threshold=opts.predict.threshold,
                                 multi_label=multi_label)
            lines.append(f"milzoo: {n} treatments: {out / 'treatments.csv'}")
    except OSError as exc:
        raise OutputFolderError(f"{out}: cannot write the plate results ({exc.strerror or exc})") from None
    return lines
