"""The batch pipeline behind ``milzoo predict``: read ahead, infer, write behind.

Reading and decoding TIFFs, normalising, and writing masks and overlays run in thread pools
(numpy, tifffile, zlib and onnxruntime release the GIL), so the network is rarely left
waiting for I/O. Results come back in input order.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

from milcnn.errors import ImageReadError, MilcnnError
from milcnn.io import write_tiff

__all__ = ["run_pipeline", "FAILURES"]

#: what a bad image may raise; anything else is a bug and propagates
FAILURES = (MilcnnError, ValueError, OSError, MemoryError)


def _yield_to_inference() -> None:
    """Let this I/O thread run only when a core is idle (Linux SCHED_IDLE, else the lowest nice),
    so it fills the gaps between onnxruntime's parallel sections instead of pre-empting them.
    The bounded queues stop it from falling behind: when they fill, inference waits for it."""
    import os
    import threading

    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        except (AttributeError, OSError):
            pass


def run_pipeline(clf, paths: list[Path], out_dir: Path, *, channel_axis=None, threshold: float = 0.5,
                 tile_size: int | None = None, workers: int = 2, batch_size: int = 1, overlays: bool = True,
                 on_error: Callable[..., None] | None = None,
                 stems: dict[Path, str] | None = None) -> Iterator[tuple[Path, object]]:
    """Predict ``paths`` and write their masks (and overlays) under ``out_dir``.

    Yields ``(path, Prediction)`` in input order, once its files are written, or ``(path, None)``
    for an image that failed (after calling ``on_error(path, one_line_message, exception)``).
    ``stems`` names each image's output files (default: the file's stem).
    """
    stems = stems or {}
    from milcnn.overlay import save_overlay

    def prepare(path: Path):
        return clf.prepare_input(path, channel_axis=channel_axis, tile_size=tile_size)

    def write(path: Path, item, pred) -> None:
        stem = stems.get(path, path.stem)
        # not fsynced, like the predictions.csv row that follows: a kill loses nothing, a power cut the
        # last few seconds (an fsync per file blocks a writer longer than writing the file takes)
        write_tiff(out_dir / "masks" / f"{stem}.tif", pred.mask, durable=False)
        if overlays:
            title = f"{path.name}\n{pred.label} (p={pred.probabilities.get(pred.label, 0):.2f})"
            save_overlay(out_dir / "overlays" / f"{stem}.png", item.chw, pred.mask, clf.classes, title=title,
                         normalized=item.x, durable=False)

    def fail(path: Path, exc: BaseException) -> tuple[Path, None]:
        if on_error is not None:
            text = exc.reason if isinstance(exc, ImageReadError) else str(exc).strip()  # the path is said once
            on_error(path, (text.splitlines() or [type(exc).__name__])[0], exc)
        return path, None

    with ThreadPoolExecutor(workers, thread_name_prefix="milzoo-read", initializer=_yield_to_inference) as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="milzoo-write", initializer=_yield_to_inference) as writers:
        reading: deque[tuple[Path, Future]] = deque()
        writing: deque[tuple[Path, Future, object]] = deque()
        queue = iter(paths)
        ahead = 2 * workers + batch_size  # images read ahead of the network: bounds memory

        def refill():
            while len(reading) < ahead:
                path = next(queue, None)
                if path is None:
                    return
                reading.append((path, readers.submit(prepare, path)))

        def drain(block: bool):
            while writing and (block or writing[0][1].done() or len(writing) > ahead):
                path, future, pred = writing.popleft()
                try:
                    future.result()
                    yield path, pred
                except FAILURES as exc:
                    yield fail(path, exc)

        refill()
        while reading:
            batch = []
            while reading and len(batch) < batch_size:
                path, future = reading[0]
                try:
                    item = future.result()
                except FAILURES as exc:
                    reading.popleft()
                    yield from drain(block=True)
                    yield fail(path, exc)
                    continue
                if batch and (item.x is None or batch[0][1].x is None or item.x.shape != batch[0][1].x.shape):
                    break
                reading.popleft()
                batch.append((path, item))
            refill()
            if not batch:
                continue
            try:
                preds = clf.predict_prepared([item for _, item in batch], threshold=threshold)
            except FAILURES as exc:
                yield from drain(block=True)
                for path, _ in batch:
                    yield fail(path, exc)
                continue
            for (path, item), pred in zip(batch, preds):
                if not overlays:
                    item.chw = None  # free the raw image early: only overlays need it
                writing.append((path, writers.submit(write, path, item, pred), pred))
            yield from drain(block=False)
        yield from drain(block=True)
