"""``milzoo predict`` on Dask against the local pipeline, and how far it scales.

Usage (the command behind ``benchmarks/results/distributed.md`` and the BENCHMARKS.md section)::

    python -m benchmarks.distributed [--fields 120] [--rounds 3]

Each round runs the same folder of 512 x 512 two-channel fields twice, in alternating order: the local
pipeline (``milzoo predict``, its default two streams on the two cores) and a local Dask cluster of two
single-threaded worker processes (``--dask-workers 2``); throughput is fields per second of the run
itself (``run.json`` seconds.run: after the model and the cluster are up). The ratio is taken per
round. Then it measures what Dask adds per field: the scheduler's round trip of an empty task (same
submission pattern), and the client's own work per field (receiving the result and writing the mask,
overlay and row), and projects fields per hour against the number of nodes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _fields(folder: Path, n: int) -> Path:
    import tifffile

    sample = tifffile.imread(ROOT / "zoo" / "yeast-loc" / "sample_input.tif")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"f{i:03d}.tif", np.roll(sample, 37 * i, axis=2), photometric="minisblack")
    return folder


def _run(images: Path, out: Path, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "milcnn.cli", "predict", str(images), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"milzoo predict {' '.join(extra)} failed: {proc.stderr[-2000:]}")
    record = json.loads((out / "run.json").read_text())
    return {"fields": record["counts"]["predicted"], "run_seconds": record["seconds"]["run"], "wall_seconds": wall}


def overheads(n: int = 400) -> dict:
    """Per-task round trip of an empty task on a 2-worker LocalCluster, in flight 8 at a time as
    ``run_distributed`` submits, and the client's cost per field (receive and write) on real results."""
    from collections import deque

    from distributed import Client, LocalCluster, wait

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        def noop(x):
            return x

        running, t0 = deque(), time.perf_counter()
        for i in range(n):
            running.append(client.submit(noop, i, pure=False))
            if len(running) >= 8:
                wait(running.popleft())
        wait(list(running))
        per_task = (time.perf_counter() - t0) / n
    return {"empty_task_seconds": per_task}


def client_cost(images: Path, n: int = 40) -> dict:
    """The client's work per field in ``run_distributed``: unpickling a result and writing its mask and
    overlay (measured on results made here, in this process)."""
    import pickle

    from milcnn import Classifier
    from milcnn.batch.dask_worker import _predict_field_on
    from milcnn.io.images import write_atomic, write_label_tiff
    from milcnn.outputs.overlay import PALETTE

    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="fp32")
    from milcnn.predict.options import PredictOptions

    options = {"predict": PredictOptions(), "overlays": True}
    paths = sorted(images.glob("*.tif"))[:n]
    blobs = [pickle.dumps(_predict_field_on(clf, p, options)) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, blob in enumerate(blobs):
            pred, overlay = pickle.loads(blob)
            write_label_tiff(Path(tmp) / f"{i}.tif", pred.mask, clf.classes, PALETTE, durable=False)
            with write_atomic(Path(tmp) / f"{i}.png", "wb", durable=False) as fh:
                fh.write(overlay)
        seconds = (time.perf_counter() - t0) / len(blobs)
    return {"client_seconds_per_field": seconds, "result_bytes_per_field": float(np.mean([len(b) for b in blobs]))}


def projection(node_rate: float, *, scheduler_seconds: float, client_seconds: float, result_bytes: float,
               link_bytes_per_second: float = 125e6) -> list[dict]:
    """Fields per hour against nodes: each node as fast as this one, capped by the scheduler (one task per
    ``scheduler_seconds``), by the client (``client_seconds`` per field) and by 125 MB/s (a 1 Gbit/s
    link) for each field's mask and overlay, which go to the client or to the shared output folder."""
    caps = {"scheduler": 1 / scheduler_seconds, "client": 1 / client_seconds,
            "the network or shared file system (125 MB/s)": link_bytes_per_second / result_bytes}
    rows = []
    for nodes in (1, 2, 4, 8, 16, 32, 64):
        rate = nodes * node_rate
        limit, cap = min(caps.items(), key=lambda kv: kv[1])
        rows.append({"nodes": nodes, "fields_per_hour": 3600 * min(rate, cap),
                     "limited_by": "the nodes" if rate <= cap else limit})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--fields", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from milcnn.io.images import write_atomic

    with tempfile.TemporaryDirectory() as tmp:
        images = _fields(Path(tmp) / "fields", args.fields)
        rounds = []
        for r in range(args.rounds):
            order = [("local", []), ("dask", ["--dask-workers", "2"]),
                     ("dask_client", ["--dask-workers", "2", "--dask-write", "client"])]
            if r % 2:
                order.reverse()
            got = {name: _run(images, Path(tmp) / f"{name}{r}", extra) for name, extra in order}
            local_rate = got["local"]["fields"] / got["local"]["run_seconds"]
            got["ratio"] = got["dask"]["fields"] / got["dask"]["run_seconds"] / local_rate
            got["ratio_client"] = got["dask_client"]["fields"] / got["dask_client"]["run_seconds"] / local_rate
            rounds.append(got)
        cost = client_cost(images)
    over = overheads()
    ratios = [r["ratio"] for r in rounds]
    node_rate = float(np.median([r["local"]["fields"] / r["local"]["run_seconds"] for r in rounds]))
    result = {"command": f"python -m benchmarks.distributed --fields {args.fields} --rounds {args.rounds}",
              "fields": args.fields, "rounds": rounds, "ratio_median": float(np.median(ratios)),
              "ratio_min": float(min(ratios)),
              "ratio_client_median": float(np.median([r["ratio_client"] for r in rounds])),
              "node_fields_per_second": node_rate, **over, **cost,
              "projection": projection(node_rate, scheduler_seconds=over["empty_task_seconds"] / 2,
                                       client_seconds=cost["client_seconds_per_field"],
                                       result_bytes=cost["result_bytes_per_field"])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with write_atomic(RESULTS / "distributed.json", "w") as fh:
        fh.write(json.dumps(result, indent=2) + "\n")
    text = render(result)
    with write_atomic(RESULTS / "distributed.md", "w") as fh:
        fh.write(text)
    print(text)
    return 0 if result["ratio_median"] >= 0.9 else 1


def render(r: dict) -> str:
    lines = ["# milzoo predict on Dask", "", f"Made by `{r['command']}` (see its docstring). 512 x 512 two-channel "
             f"fields, overlays on, this machine's 2 cores.", "",
             "| round | local pipeline, fields/s | Dask, workers write (default), fields/s | ratio | Dask, client "
             "writes, fields/s | ratio |", "|---|---|---|---|---|---|"]
    for i, rd in enumerate(r["rounds"], 1):
        loc = rd["local"]["fields"] / rd["local"]["run_seconds"]
        dsk = rd["dask"]["fields"] / rd["dask"]["run_seconds"]
        cli = rd["dask_client"]["fields"] / rd["dask_client"]["run_seconds"]
        lines.append(f"| {i} | {loc:.2f} | {dsk:.2f} | {rd['ratio']:.2f} | {cli:.2f} | {rd['ratio_client']:.2f} |")
    lines += ["", f"Dask with 2 single-threaded workers, workers writing the files: median ratio "
              f"{r['ratio_median']:.2f} of the local pipeline (lowest {r['ratio_min']:.2f}; target >= 0.9); with "
              f"the client writing them: {r['ratio_client_median']:.2f}. "
              f"An empty task's round trip on the same cluster: {1000 * r['empty_task_seconds']:.1f} ms; the "
              f"client's work per field (receive the result, write mask and overlay): "
              f"{1000 * r['client_seconds_per_field']:.1f} ms, for {r['result_bytes_per_field'] / 1024:.0f} KB "
              "of result per field.", "",
              "Projection (each node as fast as this 2-core machine's local pipeline, "
              f"{r['node_fields_per_second']:.2f} fields/s; caps from the measurements above, the scheduler "
              "taken at half an empty task's round trip):", "",
              "| nodes | fields per hour | limited by |", "|---|---|---|"]
    lines += [f"| {p['nodes']} | {p['fields_per_hour']:,.0f} | {p['limited_by']} |" for p in r["projection"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
