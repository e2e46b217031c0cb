"""The worker side of ``milcnn.batch.distributed``: the plugin that loads the model once per Dask worker, its
settings, and the tasks a worker runs (fields through the local pipeline, or one field back to the client)."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["ModelPlugin", "FieldResult", "worker_environment", "WORKER_CONFIG", "PLUGIN_NAME"]

log = logging.getLogger(__name__)

PLUGIN_NAME = "milcnn-model"

# Dask settings of the workers that milcnn starts (``--dask-workers``, ``--cluster slurm``). Dask's
# statistical profiler walks every thread's stack 100 times a second for a dashboard that is off here;
# with the system and memory monitors and the event-loop tick it took 6-8 % of the throughput of 2
# single-threaded workers on 2 cores (benchmarks/results/distributed.md). For workers of your own,
# export ``worker_environment()`` where they start. (Dask's malloc setting: ``_keep_freed_buffers``.)
WORKER_CONFIG = {"distributed.worker.profile.enabled": False,
                 "distributed.admin.system-monitor.interval": "10s",
                 "distributed.worker.memory.monitor-interval": "1s",
                 "distributed.admin.tick.interval": "1s"}


def worker_environment() -> dict[str, str]:
    """``WORKER_CONFIG`` as the environment variables that Dask reads, to export where ``dask worker``
    starts (a job script, a container): ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``, ..."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): repr(value) if isinstance(value, dict)
            else str(value) for key, value in WORKER_CONFIG.items()}


try:  # the optional extra: without it this module still imports, and says what to install when used
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object


class ModelPlugin(_WorkerPlugin):
    """A Dask worker plugin that loads the model once per worker, with one onnxruntime thread per
    worker thread (the cluster, not onnxruntime, spreads the work over the cores)."""

    name = PLUGIN_NAME

    def __init__(self, model: str, *, precision: str = "fp32", device: str = "cpu", backend: str = "auto"):
        self.model, self.precision, self.device, self.backend = model, precision, device, backend

    def setup(self, worker) -> None:
        from milcnn.predict.classifier import Classifier

        clf = Classifier.from_hub(self.model, device=self.device, precision=self.precision, backend=self.backend)
        clf.model = clf.model.with_threads(max(1, int(getattr(worker.state, "nthreads", 1) or 1)))
        worker.milcnn_classifier = clf
        _keep_freed_buffers()

    def teardown(self, worker) -> None:
        worker.__dict__.pop("milcnn_classifier", None)


def _keep_freed_buffers() -> None:
    """Let glibc reuse freed image-sized buffers in this worker process. Dask's nanny starts workers
    with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold at 128 KB: every
    megabyte-sized array of every field was mapped and zeroed afresh, 15 % more CPU per field
    (benchmarks/results/distributed.md). Buffers up to 32 MB come from the heap again, as in a plain
    process after its first image; the heap is returned to the system above 64 MB free."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to change
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)


class FieldResult:
    """What a worker that wrote a field's files itself sends back: the row's contents (``mask`` is
    None, or the mask when the plate's label image is to be written by the client)."""

    def __init__(self, label: str, probabilities: dict, areas, mask=None, *, qc: str = "ok",
                 scale_source: str = "model", n_cells: int | None = None):
        self.label, self.probabilities, self.areas, self.mask = label, probabilities, areas, mask
        self.qc, self.scale_source, self.n_cells = qc, scale_source, n_cells


def _predict_chunk(items: list, options: dict) -> list:
    """On a worker, fields that the worker writes itself: run through the local pipeline
    (``milcnn.batch.pipeline.run_pipeline``: reading the next field and writing the last one overlap the
    network, as on one machine), one ``(FieldResult or None, error line)`` per field, in order."""
    from distributed import get_worker

    from milcnn.batch.pipeline import run_pipeline

    clf = get_worker().milcnn_classifier
    errors: dict = {}
    out: list = []
    stems = {item: options["stems"].get(str(item)) or Path(str(item)).stem for item in items}
    for item, pred in run_pipeline(clf, items, Path(options["write_to"]), options["predict"], workers=1,
                                   streams=1, overlays=options["overlays"], cells=options.get("cells", False),
                                   stems=stems,
                                   on_error=lambda path, message, exc=None: errors.__setitem__(str(path), message)):
        if pred is None:
            out.append((None, errors.get(str(item), "failed")))
            continue
        areas = pred.areas
        out.append((FieldResult(pred.label, pred.probabilities, areas, pred.mask if options.get("send_mask") else None,
                                qc=pred.qc, scale_source=pred.scale_source, n_cells=pred.n_cells), None))
    return out


def _predict_fields(items: list, options: dict) -> list:
    """On a worker, fields the client writes: one ``(Prediction with its mask computed, overlay PNG bytes
    or None)`` per field, or ``(None, error line)`` for a field that failed (sent as a value: no worker
    traceback)."""
    from distributed import get_worker

    from milcnn.errors import error_line

    clf, out = get_worker().milcnn_classifier, []
    for item in items:
        try:
            out.append(_predict_field_on(clf, item, options))
        except Exception as exc:  # noqa: BLE001 - that field's failure, as the local pipeline reports it
            out.append((None, error_line(exc)))
    return out


def _predict_field_on(clf, item, options: dict):
    """One field on a worker: the prediction (mask computed, maps dropped) and the overlay's PNG."""
    prepared = clf.prepare_input(item, options["predict"])
    pred = clf.predict_prepared([prepared], threshold=options["predict"].threshold)[0]
    pred.mask  # noqa: B018 - computed here, on the worker, and sent with the prediction
    overlay = None
    if options["overlays"]:
        from milcnn.outputs.overlay import overlay_png, overlay_title

        title = overlay_title(getattr(item, "name", None) or Path(str(item)).name, pred)
        overlay = b"".join(overlay_png(prepared.chw, pred.mask, clf.classes, title=title, **prepared.display))
    pred.maps = pred.maps[:0]  # the client needs label, probabilities and mask only: send less
    return pred, overlay
