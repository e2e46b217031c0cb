"""``milzoo predict`` on a Dask cluster (the optional extra ``milcnn-sdk[dask]``).

Each worker loads the model once (``ModelPlugin``). By default a task is a chunk of fields that the
worker runs through the local pipeline (``milcnn.batch.pipeline``), writing their masks and overlays into the
output folder (which the workers and the client share) and sending back the rows; with
``write="client"`` a task is one field whose prediction and overlay PNG come back for the client to
write (no shared output folder needed). Either way the client writes the CSV rows after the files, so
``--resume``, ``run.json`` and the plate outputs are those of ``milcnn.batch.run`` unchanged, and a killed
worker's fields, re-run by Dask elsewhere, are written once.

>>> from milcnn.batch.distributed import predict
>>> predict(["plate/"], "yeast-loc", out="results", client=client)          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import Callable, Iterator

from milcnn.errors import one_line
from milcnn.batch.dask_worker import (PLUGIN_NAME, WORKER_CONFIG, ModelPlugin, _keep_freed_buffers,
                                      _predict_chunk, _predict_fields, worker_environment)
from milcnn.outputs.layout import RunLayout

__all__ = ["ModelPlugin", "DaskRunner", "predict", "predict_lazy", "run_distributed", "slurm_cluster",
           "worker_environment", "WORKER_CONFIG"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30  # to reach a scheduler and get its handshake, together

def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError("running on a Dask cluster needs dask: pip install 'milcnn-sdk[dask]'") from None
    return distributed



def _check_scheduler_answers(address: str, timeout: float) -> None:
    """Opens one connection to the scheduler at ``address`` and waits, at most ``timeout`` seconds in all, for
    its handshake, so that a port where something listens but never answers fails in one line.

    ``distributed.Client(timeout=...)`` bounds the TCP connect but then waits for the scheduler's handshake
    without a deadline (``distributed.comm.core.connect``), so such a listener would hang the run forever.

    Raises:
        TimeoutError: nothing answered in time.
        OSError: the connection was refused or closed.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    # a thread of its own: the caller may already run an event loop (a notebook)
    with ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, handshake()).result()
        except asyncio.TimeoutError:
            raise TimeoutError(f"no Dask handshake within {timeout:g} s (is that port a Dask scheduler?)") from None


class DaskRunner:
    """The engine ``milcnn.batch.run.run_batch`` runs fields on when given a cluster: connects (or starts a
    local cluster of ``workers`` processes on 127.0.0.1), has every worker load ``model`` once, then
    streams fields through ``run_distributed``. ``close()`` ends what it started.

    ``write="workers"`` (default): workers run chunks of fields through the local pipeline, writing each
    field's mask and overlay into the output folder themselves, and send back only the rows (the output folder must be on a file system they share with the
    client, as cluster scratch usually is); ``"client"``: they send the mask and the overlay's PNG and the
    client writes them (no shared output folder needed; about 0.8 MB per 512 x 512 field goes over the
    network, and the client's writing competes with the workers: ``benchmarks/results/distributed.md``).

    Raises:
        RuntimeError: the scheduler cannot be reached, or a worker cannot load the model (one line).
        ImportError: dask is not installed (says which extra to install).
    """

    def __init__(self, *, model: str, classes, precision: str = "fp32", backend: str = "auto",
                 scheduler: str | None = None, workers: int | None = None, client=None, cluster=None,
                 write: str = "workers"):
        distributed = _distributed()
        if write not in ("workers", "client"):
            raise ValueError(f"write must be 'workers' or 'client', got {write!r}")
        self.classes, self.cluster, self.own_client, self.write = tuple(classes), cluster, client is None, write
        try:
            if client is not None:
                self.client = client
            elif cluster is not None:  # e.g. slurm_cluster(): scale to the jobs asked for, then wait for one
                cluster.scale(jobs=workers or 1)
                self.client = distributed.Client(cluster)
                self.client.wait_for_workers(1, timeout=3600)
            elif scheduler is None:
                import dask

                with dask.config.set(WORKER_CONFIG):  # the nannies hand this config to their workers
                    self.cluster = distributed.LocalCluster(n_workers=workers or 2, threads_per_worker=1,
                                                            processes=True, host="127.0.0.1",
                                                            dashboard_address=None)
                self.client = distributed.Client(self.cluster)
            else:
                _check_scheduler_answers(scheduler, CONNECT_TIMEOUT_S)
                self.client = distributed.Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler {scheduler}: {one_line(exc)}") from None
        try:
            self.client.register_plugin(ModelPlugin(model, precision=precision, backend=backend), name=PLUGIN_NAME)
            loaded = self.client.run(lambda dask_worker: hasattr(dask_worker, "milcnn_classifier"))
            if not loaded or not all(loaded.values()):
                raise RuntimeError("no worker holds the model" if not loaded else "some workers did not load it")
        except Exception as exc:
            self.close()
            text = one_line(exc)
            raise RuntimeError(f"the Dask workers could not load {model}: {text}") from None

    def __call__(self, items, out_dir: Path, opts, *, on_error, stems):
        options = {"predict": opts.predict, "overlays": opts.overlays, "cells": opts.cells}
        if opts.cells and self.write != "workers":
            raise ValueError("--cells needs the workers to write (--dask-write workers): they find each field's "
                             "cells beside its mask")
        if self.write == "workers":
            options.update(write_to=str(Path(out_dir).absolute()), stems={str(k): v for k, v in stems.items()},
                           send_mask=bool(opts.write_labels))
        return run_distributed(self.client, items, Path(out_dir), options=options, classes=self.classes,
                               on_error=on_error, stems=stems, overlays=opts.overlays)

    def close(self) -> None:
        client = getattr(self, "client", None)
        ours = self.own_client and client is not None
        quiet = ours and self.cluster is not None
        if quiet:
            # a cluster this runner closes: once the run is over, its shutdown chatter is not the user's
            # business. Closed together, a worker's heartbeat can reach the closing scheduler and a nanny can
            # cancel a worker mid-call, each logging an ERROR with a traceback (dask/distributed#7105)
            try:
                client.run(_quiet_dask)
            except Exception as exc:  # the cluster is being torn down anyway
                log.debug("quieting the Dask workers: %s", exc)
        with _quiet_dask_here() if quiet else contextlib.nullcontext():
            if ours:
                client.close()
            if self.cluster is not None:
                self.cluster.close()


def _dask_loggers() -> list[logging.Logger]:
    """``distributed`` and every logger under it that exists (Dask's config gives some their own level)."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    return [logging.getLogger(n) for n in ["distributed", *names]]


def _quiet_dask() -> None:
    """Only critical messages from Dask in this process from now on (a worker about to be closed)."""
    for logger in _dask_loggers():
        logger.setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _quiet_dask_here():
    """Only critical messages from Dask in this process (the scheduler and nannies of a local cluster)
    while the block runs."""
    levels = {logger: logger.level for logger in _dask_loggers()}
    _quiet_dask()
    try:
        yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


def slurm_cluster(*, cores: int, memory: str, walltime: str, queue: str | None = None,
                  account: str | None = None, env: dict | None = None, host: str | None = None):
    """A ``dask_jobqueue.SLURMCluster`` of one single-process worker per node (job) with ``cores`` threads:
    the worker's onnxruntime uses them all. ``env`` (default: ``HF_HOME`` and ``HF_HUB_OFFLINE`` as set
    here) is exported in each job, so the nodes load the model from the shared cache that
    ``milzoo download`` filled, with no network; so is ``worker_environment()``. Submitting jobs needs ``sbatch`` (``cluster.scale``).
    ``host``: the address the scheduler listens on (default: this machine's, reachable by the nodes).

    Raises:
        ImportError: dask-jobqueue is not installed (``pip install 'milcnn-sdk[slurm]'``).
    """
    import os

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ImportError("SLURM clusters need dask-jobqueue: pip install 'milcnn-sdk[slurm]'") from None
    env = {k: os.environ[k] for k in ("HF_HOME", "HF_HUB_OFFLINE") if k in os.environ} if env is None else env
    env = {**worker_environment(), **env}
    return SLURMCluster(cores=cores, processes=1, memory=memory, walltime=walltime, queue=queue, account=account,
                        job_script_prologue=[f"export {k}={v}" for k, v in env.items()],
                        scheduler_options={"host": host} if host else None)


def run_distributed(client, items: list, out_dir: Path, *, options: dict, classes, on_error: Callable,
                    stems: dict, overlays: bool, in_flight: int | None = None) -> Iterator[tuple[object, object]]:
    """The Dask counterpart of ``milcnn.batch.pipeline.run_pipeline``: yields ``(item, Prediction or
    FieldResult)`` in input order once its files are written, or ``(item, None)`` after ``on_error``.
    Workers that write (``options["write_to"]``) take chunks of 4 fields per task; otherwise a task is
    one field and the client writes it. At most ``in_flight`` single fields (default four per worker
    thread) or half as many chunks are in flight, so memory stays bounded."""
    from milcnn.io.images import write_atomic, write_label_tiff
    from milcnn.outputs.overlay import PALETTE
    from milcnn.errors import error_line

    limit = in_flight or 4 * (sum(client.nthreads().values()) or 1)
    workers_write = options.get("write_to") is not None
    chunk = options.get("chunk", 4) if workers_write else 1
    task = _predict_chunk if workers_write else _predict_fields
    tasks = max(2, limit // 2) if workers_write else limit  # chunks: two per worker thread in flight
    for part, results in _in_order(client, task, items, options, chunk=chunk, limit=tasks):
        for item, (result, extra) in zip(part, results):
            if result is None:  # the field's own failure; ``extra`` is its error line
                on_error(item, extra, None)
                yield item, None
                continue
            if not workers_write:  # the client writes the mask and the overlay (``extra``)
                try:
                    stem = stems.get(item, Path(str(item)).stem)
                    write_label_tiff(RunLayout(out_dir).mask(stem), result.mask, classes, PALETTE,
                                     durable=False)
                    if overlays and extra is not None:
                        with write_atomic(RunLayout(out_dir).overlay(stem), "wb", durable=False) as fh:
                            fh.write(extra)
                except Exception as exc:  # noqa: BLE001
                    on_error(item, error_line(exc), exc)
                    yield item, None
                    continue
            yield item, result


def _in_order(client, task, items: list, options: dict, *, chunk: int, limit: int):
    """``task(part, options)`` on ``chunk`` consecutive items per Dask task, at most ``limit`` tasks in
    flight; yields ``(part, its results)`` in input order (a task that fails as a whole, e.g. a worker
    lost twice, gives ``(None, error line)`` for each of its items)."""
    from distributed import wait

    from milcnn.errors import error_line

    queue = iter([items[i:i + chunk] for i in range(0, len(items), chunk)])
    running: deque = deque()

    def submit_next() -> None:
        while len(running) < limit:
            part = next(queue, None)
            if part is None:
                return
            # pure=False: re-run if asked again (a resumed run), never served from an old result
            running.append((part, client.submit(task, part, options, pure=False, retries=1)))

    submit_next()
    while running:
        part, future = running.popleft()
        wait(future)
        try:
            results = future.result()
        except Exception as exc:  # noqa: BLE001
            results = [(None, error_line(exc))] * len(part)
        future.release()
        submit_next()
        yield part, results


def predict(inputs, model: str = "yeast-loc", *, out, client=None, scheduler: str | None = None,
            workers: int | None = None, precision: str = "fp32", **options) -> int:
    """``milzoo predict`` on a Dask cluster, from Python: ``inputs`` (files, folders, globs, OME-Zarr
    plates) into the folder ``out``, on ``client`` (or the cluster at ``scheduler``, or a new local
    cluster of ``workers`` processes); the other keyword options are ``milcnn.batch.run.BatchOptions``'s.
    Returns the exit code (0 all predicted, 1 some failed)."""
    from milcnn.batch.run import BatchOptions, run_batch
    from milcnn.predict.classifier import Classifier

    clf = Classifier.from_hub(model, device="cpu", precision=precision)
    runner = DaskRunner(model=model, classes=clf.classes, precision=clf.precision, scheduler=scheduler,
                        workers=workers, client=client)
    try:
        return run_batch(clf, list(inputs), Path(out), BatchOptions.from_settings(**options), echo=log.info, runner=runner)
    finally:
        runner.close()


def predict_lazy(items: list, model: str = "yeast-loc", *, threshold: float = 0.5, precision: str = "fp32"):
    """A Dask bag of per-field results (``{"image", "label", "qc", "probabilities", "mask"}``) for graphs of your
    own; each partition loads the model once."""
    import dask.bag as db


    def partition(chunk):
        from milcnn.predict.classifier import Classifier

        clf = Classifier.from_hub(model, device="cpu", precision=precision)
        _keep_freed_buffers()
        out = []
        for item in chunk:
            pred = clf.predict(item, threshold=threshold)
            out.append({"image": str(item), "label": pred.label, "qc": pred.qc, "probabilities": pred.probabilities,
                        "mask": pred.mask})
        return out

    return db.from_sequence(items, partition_size=max(1, len(items) // 8 or 1)).map_partitions(partition)
