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

from milcnn import constants
from milcnn.errors import ImageReadError, MilcnnError
from milcnn.io.images import write_label_tiff
from milcnn.predict.options import PredictOptions

__all__ = ["run_pipeline", "default_streams", "FAILURES"]

#: what reading, preparing, predicting or writing one image may raise: each becomes that image's row in
#: errors.csv (a bug in milcnn included: one image must not abort a batch); KeyboardInterrupt and
#: SystemExit are not Exceptions and stop the run
FAILURES = (Exception,)


def error_line(exc: BaseException) -> str:
    """One line for an image's failure (its path is said beside it): milcnn's own errors as they are
    worded, anything else with its type, e.g. ``DecompressionBombError: Image size ...``."""
    if isinstance(exc, ImageReadError):
        text = exc.reason
    elif isinstance(exc, (MilcnnError, ValueError, OSError)):
        text = str(exc).strip()
    else:
        text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split()) or type(exc).__name__


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
                 streams: int | None = None, batch_size: int = 1, overlays: bool = True,
                 on_error: Callable[..., None] | None = None,
                 stems: dict[Path, str] | None = None) -> Iterator[tuple[Path, object]]:
    """Predict ``paths`` and write their masks (and overlays) under ``out_dir``.

    Yields ``(path, Prediction)`` in input order, once its files are written, or ``(path, None)``
    for an image that failed (after calling ``on_error(path, one_line_message, exception)``).

    Args:
        workers: threads reading images, and as many writing results.
        streams: images (or batches) in the network at once; default ``default_streams(clf)``.
            With more than one, whole images run on a second onnxruntime session whose threads
            are the cores shared among the streams (the classifier's own session, on every
            core, still runs tiled images).
        batch_size: consecutive same-size images per network call.
        options: how each image is predicted (``PredictOptions``: threshold, tiles, scale, channels).
        stems: each image's output file stem (default: the file's stem).
    """
    from milcnn.outputs.overlay import PALETTE, overlay_title, save_overlay
    from milcnn.runtime.onnx import physical_cores

    stems = stems or {}
    streams = default_streams(clf) if streams is None else max(1, streams)
    model = clf.model
    if streams > 1:
        total = clf.model.threads or physical_cores()
        model = clf.model.with_threads(max(1, total // streams))

    options = options or PredictOptions()

    def prepare(path: Path):
        return clf.prepare_input(path, options)

    def infer(items):
        return clf.predict_prepared(items, threshold=options.threshold, model=model)

    def write(path: Path, item, pred) -> None:
        stem = stems.get(path, path.stem)
        # not fsynced, like the predictions.csv row that follows: a kill loses nothing, a power cut the
        # last few seconds (an fsync per file blocks a writer longer than writing the file takes)
        write_label_tiff(out_dir / "masks" / f"{stem}.tif", pred.mask, clf.classes, PALETTE, durable=False)
        if overlays:
            save_overlay(out_dir / "overlays" / f"{stem}.png", item.chw, pred.mask, clf.classes,
                         title=overlay_title(path.name, pred),
                         **item.display, durable=False)

    def fail(slot: _Slot) -> tuple[Path, None]:
        exc = slot.error
        if on_error is not None:
            on_error(slot.path, error_line(exc), exc)
        return slot.path, None

    # Reader and writer threads run at the inference threads' own priority. They once ran as SCHED_IDLE, to
    # fill only the gaps between images: on a machine busy with other work that starved them, and 120
    # fields took 68 s instead of 4 s (BENCHMARKS.md, issue 21); on an idle one it was slower too.
    with ThreadPoolExecutor(workers, thread_name_prefix="milzoo-read") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="milzoo-write") as writers, \
            ThreadPoolExecutor(streams, thread_name_prefix="milzoo-infer") as network:
        order: deque[_Slot] = deque()  # every slot not yet yielded, in input order
        waiting: deque[_Slot] = deque()  # read (or being read), not yet in the network
        running: list[tuple[list[_Slot], Future]] = []
        queue = iter(paths)
        ahead = 2 * workers + streams * batch_size  # images between the reader and the yield: bounds memory

        def refill() -> None:
            while len(order) < ahead + workers:
                path = next(queue, None)
                if path is None:
                    return
                slot = _Slot(path, readers.submit(prepare, path))
                order.append(slot)
                waiting.append(slot)

        def take_batch() -> list[_Slot]:
            """The next images whose reads are done, up to batch_size of one shape; failed reads
            are marked on their slots and skipped."""
            batch: list[_Slot] = []
            while waiting and len(batch) < batch_size and waiting[0].read.done():
                slot = waiting[0]
                try:
                    item = slot.read.result()
                except FAILURES as exc:
                    waiting.popleft().error = exc
                    continue
                first = batch[0].item if batch else None
                if first is not None and (item.tiled or first.tiled or item.input_shape != first.input_shape):
                    break
                waiting.popleft()
                slot.item = item
                batch.append(slot)
            return batch

        def collect(done: set) -> None:
            for entry in [e for e in running if e[1] in done]:
                running.remove(entry)
                batch, future = entry
                try:
                    preds = future.result()
                except FAILURES as exc:
                    for slot in batch:
                        slot.error = exc
                    continue
                for slot, pred in zip(batch, preds):
                    slot.pred = pred
                    if not overlays:
                        slot.item.chw = None  # free the raw image early: only overlays need it
                    slot.write = writers.submit(write, slot.path, slot.item, pred)

        refill()
        while order:
            while len(running) < streams:
                batch = take_batch()
                if not batch:
                    break
                running.append((batch, network.submit(infer, [slot.item for slot in batch])))
            while order and order[0].finished():
                slot = order.popleft()
                if slot.error is not None:
                    yield fail(slot)
                    continue
                try:
                    slot.write.result()
                    yield slot.path, slot.pred
                except FAILURES as exc:
                    slot.error = exc
                    yield fail(slot)
            refill()
            if not order:
                break
            # sleep until something moves: a read the network can take, a batch done, the next yield
            events = [future for _, future in running]
            if waiting and len(running) < streams:
                events.append(waiting[0].read)
            if order[0].write is not None:
                events.append(order[0].write)
            if not events:
                continue  # nothing in flight: the loop above has work (a failed head, a read to take)
            done, _ = wait(events, return_when=FIRST_COMPLETED)
            collect(done)
