"""The batch pipeline behind ``milzoo predict``: read ahead, infer in streams, write behind.

Reading and decoding TIFFs, normalising, and writing masks and overlays run in thread pools
(numpy, tifffile, the deflaters and onnxruntime release the GIL). On a CPU two inference
streams run side by side, each a single image on half the cores: when one waits for its next
image or for a core, the other keeps computing, where one stream on every core would stall
whole. Results come back in input order.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from milcnn.errors import error_line
from milcnn.io.images import write_label_tiff
from milcnn.outputs.layout import RunLayout
from milcnn.predict.options import PredictOptions

__all__ = ["run_pipeline", "default_streams", "FAILURES"]

#: what reading, preparing, predicting or writing one image may raise: each becomes that image's row in
#: errors.csv (a bug in milcnn included: one image must not abort a batch); KeyboardInterrupt and
#: SystemExit are not Exceptions and stop the run
FAILURES = (Exception,)


def default_streams(clf) -> int:
    """Inference streams for ``clf``: 2 on a CPU with at least 2 threads to share (its cores,
    or ``MILCNN_NUM_THREADS``), else 1 (a GPU is kept busy by batches, not streams)."""
    from milcnn.runtime.onnx import physical_cores

    on_cpu = clf.model.on_cpu
    return 2 if on_cpu and (clf.model.threads or physical_cores()) >= 2 else 1


@dataclass
class _Slot:
    """One input image on its way through the pipeline."""

    path: Path
    read: Future
    item: object = None
    pred: object = None
    write: Future | None = None
    error: BaseException | None = None

    def finished(self) -> bool:
        return self.error is not None or (self.write is not None and self.write.done())


def run_pipeline(clf, paths: list[Path], out_dir: Path, options: PredictOptions | None = None, *, workers: int = 2,
                 streams: int | None = None, batch_size: int = 1, overlays: bool = True, cells: bool = False,
                 on_error: Callable[..., None] | None = None,
                 stems: dict[Path, str] | None = None) -> Iterator[tuple[Path, object]]:
    """Predict ``paths`` and write their masks (and overlays) under ``out_dir``.

    Yields ``(path, Prediction)`` in input order, once its files are written, or ``(path, None)``
    for an image that failed (after calling ``on_error(path, one_line_message, exception)``).

    Args:
        options: how each image is predicted (``PredictOptions``: threshold, tiles, scale, channels).
        workers: threads reading images, and as many writing results.
        streams: images (or batches) in the network at once; default ``default_streams(clf)``.
            With more than one, whole images run on a second onnxruntime session whose threads
            are the cores shared among the streams (the classifier's own session, on every
            core, still runs tiled images).
        batch_size: consecutive same-size images per network call.
        stems: each image's output file stem (default: the file's stem).
        cells: also write each image's cells (``cells/<stem>.csv``, ``milcnn.outputs.cells``).
    """
    streams = default_streams(clf) if streams is None else max(1, streams)
    # Reader and writer threads run at the inference threads' own priority. They once ran as SCHED_IDLE, to
    # fill only the gaps between images: on a machine busy with other work that starved them, and 120
    # fields took 68 s instead of 4 s (BENCHMARKS.md, issue 21); on an idle one it was slower too.
    with ThreadPoolExecutor(workers, thread_name_prefix="milzoo-read") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="milzoo-write") as writers, \
            ThreadPoolExecutor(streams, thread_name_prefix="milzoo-infer") as network:
        pipeline = _Pipeline(clf, RunLayout(out_dir), options or PredictOptions(), pools=(readers, writers, network),
                             workers=workers, streams=streams, batch_size=batch_size, overlays=overlays,
                             stems=stems or {}, on_error=on_error, cells=cells)
        yield from pipeline.run(iter(paths))


class _Pipeline:
    """The state of one ``run_pipeline``: every slot not yet yielded (``order``, in input order), those read
    (or being read) but not yet in the network (``waiting``), and the batches in the network (``running``)."""

    def __init__(self, clf, layout: RunLayout, options: PredictOptions, *, pools, workers: int, streams: int,
                 batch_size: int, overlays: bool, stems: dict, on_error, cells: bool = False):
        from milcnn.runtime.onnx import physical_cores

        self.clf, self.layout, self.options = clf, layout, options
        self.readers, self.writers, self.network = pools
        self.workers, self.streams, self.batch_size, self.overlays = workers, streams, batch_size, overlays
        self.stems, self.on_error, self.cells = stems, on_error, cells
        self.model = clf.model
        if streams > 1:
            self.model = clf.model.with_threads(max(1, (clf.model.threads or physical_cores()) // streams))
        self.order: deque[_Slot] = deque()
        self.waiting: deque[_Slot] = deque()
        self.running: list[tuple[list[_Slot], Future]] = []
        self.ahead = 2 * workers + streams * batch_size  # images between the reader and the yield: bounds memory

    def run(self, queue) -> Iterator[tuple[Path, object]]:
        self.refill(queue)
        while self.order:
            while len(self.running) < self.streams:
                batch = self.take_batch()
                if not batch:
                    break
                self.running.append((batch, self.network.submit(self.infer, [slot.item for slot in batch])))
            yield from self.finished()
            self.refill(queue)
            if not self.order:
                break
            # sleep until something moves: a read the network can take, a batch done, the next yield
            events = [future for _, future in self.running]
            if self.waiting and len(self.running) < self.streams:
                events.append(self.waiting[0].read)
            if self.order[0].write is not None:
                events.append(self.order[0].write)
            if not events:
                continue  # nothing in flight: the loop above has work (a failed head, a read to take)
            done, _ = wait(events, return_when=FIRST_COMPLETED)
            self.collect(done)

    def prepare(self, path: Path):
        return self.clf.prepare_input(path, self.options)

    def infer(self, items):
        return self.clf.predict_prepared(items, threshold=self.options.threshold, model=self.model)

    def write(self, path: Path, item, pred) -> None:
        from milcnn.outputs.overlay import PALETTE, overlay_title, save_overlay

        stem = self.stems.get(path, path.stem)
        # not fsynced, like the predictions.csv row that follows: a kill loses nothing, a power cut the
        # last few seconds (an fsync per file blocks a writer longer than writing the file takes)
        write_label_tiff(self.layout.mask(stem), pred.mask, self.clf.classes, PALETTE, durable=False)
        if self.cells:
            from milcnn.outputs.cells import field_cells, write_field_cells

            write_field_cells(self.layout.cell_file(stem), field_cells(item.chw, pred, self.clf.info))
        if self.overlays:
            save_overlay(self.layout.overlay(stem), item.chw, pred.mask, self.clf.classes,
                         title=overlay_title(path.name, pred), **item.display, durable=False)

    def fail(self, slot: _Slot) -> tuple[Path, None]:
        if self.on_error is not None:
            self.on_error(slot.path, error_line(slot.error), slot.error)
        return slot.path, None

    def refill(self, queue) -> None:
        while len(self.order) < self.ahead + self.workers:
            path = next(queue, None)
            if path is None:
                return
            slot = _Slot(path, self.readers.submit(self.prepare, path))
            self.order.append(slot)
            self.waiting.append(slot)

    def take_batch(self) -> list[_Slot]:
        """The next images whose reads are done, up to batch_size of one shape; failed reads are marked on
        their slots and skipped."""
        batch: list[_Slot] = []
        while self.waiting and len(batch) < self.batch_size and self.waiting[0].read.done():
            slot = self.waiting[0]
            try:
                item = slot.read.result()
            except FAILURES as exc:
                self.waiting.popleft().error = exc
                continue
            first = batch[0].item if batch else None
            if first is not None and (item.tiled or first.tiled or item.input_shape != first.input_shape):
                break
            self.waiting.popleft()
            slot.item = item
            batch.append(slot)
        return batch

    def collect(self, done: set) -> None:
        for entry in [e for e in self.running if e[1] in done]:
            self.running.remove(entry)
            batch, future = entry
            try:
                preds = future.result()
            except FAILURES as exc:
                for slot in batch:
                    slot.error = exc
                continue
            for slot, pred in zip(batch, preds):
                slot.pred = pred
                if not (self.overlays or self.cells):
                    slot.item.chw = None  # free the raw image early: only overlays and cells need it
                slot.write = self.writers.submit(self.write, slot.path, slot.item, pred)

    def finished(self) -> Iterator[tuple[Path, object]]:
        """The finished slots at the head of ``order``, in input order."""
        while self.order and self.order[0].finished():
            slot = self.order.popleft()
            if slot.error is not None:
                yield self.fail(slot)
                continue
            try:
                slot.write.result()
                yield slot.path, slot.pred
            except FAILURES as exc:
                slot.error = exc
                yield self.fail(slot)
