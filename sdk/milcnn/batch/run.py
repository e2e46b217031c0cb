"""The ``milzoo predict`` job: inputs to an output folder of results, with provenance, progress and
resumption. ``milcnn.cli`` parses the flags; ``milcnn.batch.inputs`` finds the inputs;
``milcnn.batch.pipeline`` (or ``milcnn.batch.distributed``) runs the images; ``milcnn.outputs`` writes
and names what the folder holds; this module runs the job from start to ``run.json``.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from milcnn import constants
from milcnn.batch.inputs import Inputs, gather_inputs
from milcnn.batch.provenance import check_provenance, provenance, write_run
from milcnn.batch.report import Messages, Progress
from milcnn.io.omezarr import ZarrField
from milcnn.outputs.layout import RunLayout, as_text, output_stems
from milcnn.outputs.results import ResultsFolder
from milcnn.outputs.rows import header, prediction_row, read_rows, row_counts
from milcnn.predict.options import PredictOptions

__all__ = ["BatchOptions", "run_batch"]

log = logging.getLogger(__name__)


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
    cells: bool = False  # --cells: cells/<stem>.csv per image, gathered into cells.csv at the end
    manifest: Path | None = None  # inputs from a CSV (path or path_<channel>), its other columns carried
    command: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(cls, **settings) -> "BatchOptions":
        """Options from flat keywords: ``PredictOptions``'s fields go to ``predict``, the rest are this class's."""
        names = {f.name for f in fields(PredictOptions)}
        predict = PredictOptions(**{k: v for k, v in settings.items() if k in names})
        return cls(predict=predict, **{k: v for k, v in settings.items() if k not in names})


def run_batch(clf, inputs, out_dir: Path, opts: BatchOptions, *, echo: Callable[[str], None],
              runner: Callable | None = None) -> int:
    """Predict ``inputs`` (files, folders, globs, OME-Zarr plates) into ``out_dir``; returns the exit code
    (0 all predicted, 1 some failed, 130 interrupted: the results so far are complete).

    ``runner(items, out_dir, opts, on_error=, stems=)`` replaces the local pipeline (``milcnn.batch.pipeline``)
    with another engine that yields ``(item, Prediction or None)`` in input order once the item's files
    are written: ``milcnn.batch.distributed.DaskRunner``.

    Raises:
        ResultsFolderError, OutputFolderError: the folder cannot take these results (exit 2).
        ValueError: no input images.
    """
    from milcnn.outputs.plates import read_plate_map, write_plate_outputs
    from milcnn.outputs.cells import write_cells_csv
    from milcnn.outputs.report import write_report

    if opts.cells and clf.info.cells is None:
        raise ValueError(f"--cells: {clf.name} records no way to find cells (no cells block in its config.json; "
                         "python -m training.cells writes one)")
    columns = header(clf.classes, clf.info.multi_label)
    found = gather_inputs(clf, inputs, opts, taken=columns, echo=echo, out_dir=out_dir)
    plate_map = read_plate_map(opts.plate_map) if opts.plate_map else None
    mine = provenance(clf, opts)
    with ResultsFolder(out_dir, columns + found.extra_names, resume=opts.resume, overwrite=opts.overwrite) as results:
        before = check_provenance(out_dir, mine) if opts.resume else None
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {**mine, "command": opts.command, "started": started,
                  "first_started": (before or {}).get("first_started", started), "finished": None, "counts": None}
        write_run(out_dir, record)
        job = _Job(clf, found, results, opts, echo)
        t_start = time.perf_counter()
        interrupted = job.run(out_dir, runner)
        t0 = time.thread_time()
        rows = read_rows(out_dir)
        if not interrupted:
            for line in write_plate_outputs(out_dir, rows, clf.classes, threshold=opts.predict.threshold,
                                            plate_map=plate_map, multi_label=clf.info.multi_label):
                echo(line)
            if opts.cells:
                echo(f"milzoo: {write_cells_csv(out_dir, rows):,} cells: {RunLayout(out_dir).cells_csv}")
        job.plate_seconds += time.thread_time() - t0
        record.update(finished=None if interrupted else datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      counts={"inputs": len(found.paths) + len(found.missing), "predicted": job.predicted,
                              "failed": job.failed, "skipped_in_subfolders": found.skipped, **row_counts(rows)},
                      seconds={"run": round(time.perf_counter() - t_start, 3),  # wall clock
                               "plate_outputs": round(job.plate_seconds, 3)})  # CPU time of the plate work
        write_run(out_dir, record)
        if not interrupted:
            write_report(out_dir, rows, clf.info, record)
    echo(f"{job.predicted} of {len(found.paths)} images predicted with {clf.name} ({clf.precision}, "
         f"{', '.join(clf.model.providers)}); results in {out_dir}")
    if interrupted:
        echo("milzoo: interrupted; the results so far are complete: continue with --resume")
        return 130
    return 1 if job.failed else 0


class _Job:
    """The images of one run through the network into ``results``: rows, errors, counts and the CPU time
    of the plate work (where each image sits and what its mask covers)."""

    def __init__(self, clf, found: Inputs, results: ResultsFolder, opts: BatchOptions, echo):
        self.clf, self.found, self.results, self.opts, self.echo = clf, found, results, opts, echo
        self.messages = Messages(echo)
        self.predicted = self.failed = 0
        self.plate_seconds = 0.0

    def on_error(self, path, message: str, exc: BaseException | None = None) -> None:
        self.failed += 1
        self.results.add_error(str(path), message)
        self.messages.file(path, message)
        if self.opts.debug and exc is not None:
            traceback.print_exception(exc, file=sys.stderr)

    def run(self, out_dir: Path, runner) -> bool:
        """Every image not done yet; returns whether the run was interrupted."""
        found, results = self.found, self.results
        done = results.done
        todo = [p for p in found.paths if as_text(str(p)) not in done]
        self.predicted = len(found.paths) - len(todo)
        if self.opts.resume and len(todo) < len(found.paths):
            self.echo(f"milzoo: resuming: {self.predicted} of {len(found.paths)} images already predicted in "
                      f"{out_dir}; {len(todo)} to do")
        results.retry({as_text(str(p)) for p in todo} | {as_text(str(m)) for m in found.missing}
                      | {as_text(name) for name, _ in found.problems})
        for item in found.missing:
            self.on_error(item, "no such file, folder or matching files")
        for name, problem in found.problems:
            self.on_error(name, problem)
        stems = output_stems(found.paths)
        if runner is not None:
            stream = runner(todo, out_dir, self.opts, on_error=self.on_error, stems=stems)
        else:
            from milcnn.batch.pipeline import run_pipeline

            stream = run_pipeline(self.clf, todo, out_dir, self.opts.predict, workers=self.opts.workers,
                                  streams=self.opts.streams, batch_size=self.opts.batch_size,
                                  overlays=self.opts.overlays, cells=self.opts.cells, on_error=self.on_error,
                                  stems=stems)
        interrupted = False
        progress = Progress(len(todo), self.clf.name)
        try:
            for path, pred in stream:
                self.add(path, pred)
                progress.update(1)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.close()
        results.finish([as_text(str(x)) for x in (*found.missing, *(name for name, _ in found.problems), *found.paths)])
        if not interrupted:  # every writer is done: a temporary file now is one a killed writer left
            results.remove_partial_files()
        for line in self.messages.summary():
            self.echo(line)
        return interrupted

    def add(self, path, pred) -> None:
        """One image's result: its label image into an OME-Zarr plate (``--write-labels``), and its row."""
        from milcnn.outputs.overlay import PALETTE

        if pred is not None and self.opts.write_labels and isinstance(path, ZarrField) and pred.mask is not None:
            try:
                path.write_label(pred.mask, self.clf.classes, PALETTE)
            except Exception as exc:  # noqa: BLE001 - that field's failure, as any other
                self.on_error(path, f"cannot write its label image into the plate ({type(exc).__name__}: {exc})", exc)
                return
        if pred is None:
            return
        t0 = time.thread_time()
        row = prediction_row(str(path), pred, self.clf.classes, threshold=self.opts.predict.threshold,
                             argmax=self.opts.argmax, multi_label=self.clf.info.multi_label,
                             location=self.found.location(path))
        self.plate_seconds += time.thread_time() - t0
        self.results.add_prediction(row + self.found.extras.get(path, [""] * len(self.found.extra_names)))
        self.predicted += 1
