"""The SDK at each precision against the other ways to run the same network on this CPU.

Usage (the command behind ``benchmarks/results/peers.md`` and the README / BENCHMARKS.md figures)::

    python -m benchmarks.peers [--rounds 5] [--reps 3] [--pipeline-images 120] [--pipeline-rounds 3]
                               [--out benchmarks/results/peers]
    python -m benchmarks.peers --pipeline-against COMMIT [--pipeline-images 120] [--pipeline-rounds 3]

The second form measures only ``milzoo predict``'s throughput against an earlier commit's SDK
(``benchmarks/results/throughput.md``): the regression check of a change not meant to cost speed.

Everything runs in this one process on the machine's cores (2 threads each), in interleaved rounds: each
round times every configuration ``--reps`` times in turn, so a slow moment of this shared machine falls on
all of them; the figure is the median over rounds of each round's median. Two inputs: the simulated
1024 x 1344 two-channel yeast field of ``benchmarks.inference`` (one image), and batches of 8 images of
512 x 512 (ms per image).

- SDK rows are end to end: the uint16 image in memory to its mask (``Classifier.predict(image).mask``;
  a batch: ``predict_batch(..., batch_size=8)``), at fp32 (onnxruntime), int8 and bf16 (the backend
  ``auto`` picks: OpenVINO where installed), and int8 on onnxruntime; timed after the first
  ``constants.SCALE_CHECKS`` images, which also measure their cells' size (once per Classifier).
- Peer rows are the network alone on the normalised float32 input, each at its best settings here:
  onnxruntime (the same files, its default session with 2 threads), OpenVINO (``model.onnx`` in f32 and
  bf16, ``model.int8.onnx``; compiled for the input's static shape, latency hint), PyTorch eager fp32 and
  ``torch.compile`` (fp32, and the model in bf16) of the training package's MILCNN with the same weights.
- Per step (SDK int8): normalising, the network, the mask.
- The matrix-multiply peaks of fp32, bf16 and int8 (``benchmarks.inference.matmul_peak``).
- ``milzoo predict`` on a folder of 512 x 512 images (read, predict, masks, overlays and CSV written), in
  subprocesses in alternating order: the fp32 default against ``--precision int8`` and ``bf16``.
- Accuracy at each precision and backend: the real sets of ``benchmarks.realdata``, measured in the run;
  the simulated test sets measured in the run where their files are here (``zoo/release*.sh`` makes
  them under ``data/``), else as ``training.quantize`` recorded them in each model's config.

On a CPU without bf16 instructions every bf16 row is left out (the SDK refuses bf16 there, and PyTorch
would emulate it, far slower), and the report says so. ``--out`` names the report (``.json`` and ``.md``):
runs on other CPUs go beside the committed one, which ``BENCHMARKS.md`` and the README quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.inference import ROOT, ZOO, image_of, matmul_peak, torch_model
from benchmarks.machine import cpu_description
from training.data.real import DEFAULT_REAL_DATA
from milcnn.io.images import write_atomic

RESULTS = ROOT / "benchmarks" / "results"
THREADS = 2
BATCH = 8


def _gop(h: int, w: int) -> float:
    """GOP of the network on an h x w image (``training.model.count_flops``: 2 per multiply-add)."""
    from training.model import count_flops

    return count_flops(torch_model(), h, w) / 1e9


def _sdk(precision: str, backend: str, images: np.ndarray):
    from milcnn import Classifier, constants

    clf = Classifier.from_hub("yeast-loc", device="cpu", precision=precision, backend=backend)
    for _ in range(-(-constants.SCALE_CHECKS // len(images))):  # a Classifier's first images also measure
        clf.predict_batch(list(images), batch_size=len(images))  # their cells' size: time what follows
    if len(images) == 1:
        return lambda: clf.predict(images[0]).mask
    return lambda: [p.mask for p in clf.predict_batch(list(images), batch_size=len(images))]


def _onnxruntime(file: str, x: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(ZOO / file), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"image": x})


def _openvino(file: str, hint: str, x: np.ndarray):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(ZOO / file))
    model.reshape({"image": list(x.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    return lambda: request.infer({"image": x})


def _torch(kind: str, x: np.ndarray):
    import torch

    torch.set_num_threads(THREADS)
    model = torch_model()
    xt = torch.from_numpy(x)
    if kind == "compile-bf16":
        model, xt = model.to(torch.bfloat16), xt.to(torch.bfloat16)
    if kind.startswith("compile"):
        model = torch.compile(model, dynamic=False)

    def step():
        with torch.no_grad():
            return model(xt)
    return step


def configurations(images: np.ndarray, x: np.ndarray, *, bf16: bool = True) -> dict:
    """name -> (kind, precision, make step); the step is built lazily (compiling takes time). Without
    ``bf16``, none of the bf16 ones."""
    every = {
        "SDK fp32 (onnxruntime)": ("sdk", "fp32", lambda: _sdk("fp32", "auto", images)),
        "SDK int8 (OpenVINO)": ("sdk", "int8", lambda: _sdk("int8", "openvino", images)),
        "SDK int8 (onnxruntime)": ("sdk", "int8", lambda: _sdk("int8", "onnxruntime", images)),
        "SDK bf16 (OpenVINO)": ("sdk", "bf16", lambda: _sdk("bf16", "openvino", images)),
        "onnxruntime fp32": ("peer", "fp32", lambda: _onnxruntime("model.onnx", x)),
        "onnxruntime int8": ("peer", "int8", lambda: _onnxruntime("model.int8.onnx", x)),
        "OpenVINO fp32": ("peer", "fp32", lambda: _openvino("model.onnx", "f32", x)),
        "OpenVINO bf16": ("peer", "bf16", lambda: _openvino("model.onnx", "bf16", x)),
        "OpenVINO int8": ("peer", "int8", lambda: _openvino("model.int8.onnx", "f32", x)),
        "PyTorch eager fp32": ("peer", "fp32", lambda: _torch("eager", x)),
        "torch.compile fp32": ("peer", "fp32", lambda: _torch("compile", x)),
        "torch.compile bf16": ("peer", "bf16", lambda: _torch("compile-bf16", x)),
    }
    return {name: c for name, c in every.items() if bf16 or c[1] != "bf16"}


def time_configurations(images: np.ndarray, *, rounds: int, reps: int, skip: tuple[str, ...] = (),
                        bf16: bool = True) -> dict:
    """Interleaved rounds over every configuration; ms per image (median over rounds of round medians)."""
    from milcnn.process.preprocess import normalize

    x = np.stack([normalize(image) for image in images]).astype(np.float32)
    steps, setup = {}, {}
    for name, (kind, precision, make) in configurations(images, x, bf16=bf16).items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        try:
            step = make()
            step()  # warm-up: compiles, allocates
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
            setup[name] = {"kind": kind, "precision": precision, "error": " ".join(str(exc).split())[:200]}
            continue
        steps[name] = step
        setup[name] = {"kind": kind, "precision": precision, "first_call_s": round(time.perf_counter() - t0, 2)}
    per_round = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            per_round[name].append(1000 * statistics.median(times) / len(images))
    for name, values in per_round.items():
        setup[name].update(ms=round(statistics.median(values), 2), ms_rounds=[round(v, 2) for v in values])
    return setup


def sdk_steps(image: np.ndarray, *, reps: int = 7) -> dict:
    """Median ms of each step of ``Classifier.predict(image).mask`` at int8 on the backend ``auto`` picks:
    preparing (the normalisation's percentiles, and normalising in numpy where the backend does not
    normalise inside its graph), the network, the mask."""
    from milcnn import Classifier, constants
    from milcnn.predict.runner import run_network

    clf = Classifier.from_hub("yeast-loc", device="cpu", precision="int8")
    for _ in range(constants.SCALE_CHECKS + 1):  # the first images also measure their cells' size
        clf.predict(image).mask  # noqa: B018
    out = {"prepare": [], "network": [], "mask": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        item = clf.prepare_input(image)
        t1 = time.perf_counter()
        probs, maps = run_network(clf.model, [item])
        t2 = time.perf_counter()
        clf.results.make(probs[0], maps[0], item, threshold=0.5).mask  # noqa: B018
        t3 = time.perf_counter()
        for key, seconds in zip(out, (t1 - t0, t2 - t1, t3 - t2)):
            out[key].append(seconds)
    return {"backend": clf.model.backend, "in_graph": item.normalized is None,
            **{k: round(1000 * statistics.median(v), 2) for k, v in out.items()}}


def cpu_per_image(*, reps: int = 20) -> dict:
    """CPU ms per 512 x 512 field of each step ``milzoo predict`` runs (yeast-loc, the pipeline's model):
    reading and preparing (``prepare_input``: at int8 on OpenVINO the percentiles; the normalising is in the
    network's graph, and the overlay normalises its bands), the network on one thread at fp32 (the default)
    and int8, the mask, the mask TIFF and the overlay PNG, each as the pipeline calls it. On a CPU-bound pipeline the int8 : fp32 throughput ratio cannot pass
    ``(fp32 network + rest) / (int8 network + rest)``: the ``bound`` this returns."""
    import tifffile

    from milcnn import Classifier
    from milcnn.io.images import write_label_tiff
    from milcnn.outputs.overlay import PALETTE, overlay_title, save_overlay

    def cpu_ms(step, clock=time.thread_time) -> float:
        step()
        times = []
        for _ in range(reps):
            t0 = clock()
            step()
            times.append(clock() - t0)
        return 1000 * statistics.median(times)

    fp32 = Classifier.from_hub("yeast-loc", device="cpu")
    int8 = Classifier.from_hub("yeast-loc", device="cpu", precision="int8")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.tif"
        tifffile.imwrite(path, tifffile.imread(ZOO / "sample_input.tif"), photometric="minisblack")
        item = int8.prepare_input(path)
        pred = int8.predict_prepared([item])[0]
        ms = {"read and prepare": cpu_ms(lambda: int8.prepare_input(path))}
        probs, maps = int8.model.run(item.x[None])
        ms["mask"] = cpu_ms(lambda: int8.results.make(probs[0], maps[0], item, threshold=0.5).mask)
        mask = pred.mask
        ms["mask TIFF"] = cpu_ms(lambda: write_label_tiff(Path(tmp) / "mask.tif", mask, int8.classes, PALETTE,
                                                          durable=False))
        ms["overlay PNG"] = cpu_ms(lambda: save_overlay(Path(tmp) / "overlay.png", item.chw, mask, int8.classes,
                                                        title=overlay_title(path.name, pred), **item.display,
                                                        durable=False))
        # the networks on one thread, as each of the pipeline's two streams runs them; process time counts
        # the runtime's own threads
        for name, clf in (("network fp32", fp32), ("network int8", int8)):
            one = clf.model.with_threads(1)
            ms[name] = cpu_ms(lambda: one.run(item.x[None]), clock=time.process_time)
    rest = sum(v for k, v in ms.items() if not k.startswith("network"))
    return {"ms": {k: round(v, 2) for k, v in ms.items()}, "rest": round(rest, 2),
            "bound": round((ms["network fp32"] + rest) / (ms["network int8"] + rest), 2),
            "rest_for_3x": round((ms["network fp32"] - 3 * ms["network int8"]) / 2, 2)}


def pipeline_throughput(n: int, rounds: int, *, bf16: bool = True) -> dict:
    """``milzoo predict`` on ``n`` 512 x 512 fields: fp32 (the default) against int8 and bf16, images per
    second of each run's own ``run.json`` (after the model is loaded), rounds in alternating order.

    Two more int8 rows say where the time goes: without overlay PNGs, and with two other CPU-bound
    processes running (a shared machine), where the pipeline's threads must not starve."""
    import tifffile

    int8 = ["--precision", "int8"]
    configs = {"fp32 (default)": ([], False), "int8": (int8, False), "bf16": (["--precision", "bf16"], False),
               "int8, no overlays": ([*int8, "--no-overlays"], False),
               "int8, 2 other CPU-bound processes": (int8, True)}
    if not bf16:
        del configs["bf16"]
    rates = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fields"
        folder.mkdir()
        sample = tifffile.imread(ZOO / "sample_input.tif")
        for i in range(n):
            tifffile.imwrite(folder / f"f{i:03d}.tif", np.roll(sample, 37 * i, axis=2), photometric="minisblack")
        for r in range(rounds):
            order = list(configs.items())
            if r % 2:
                order.reverse()
            for name, (extra, busy) in order:
                out = Path(tmp) / f"out-{r}-{list(configs).index(name)}"
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if busy else 0)]
                try:
                    proc = subprocess.run([sys.executable, "-m", "milcnn.cli", "predict", str(folder), "--out",
                                           str(out), *extra], capture_output=True, text=True, timeout=3600)
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
                if proc.returncode != 0:
                    raise SystemExit(f"milzoo predict {' '.join(extra)} failed: {proc.stderr[-2000:]}")
                record = json.loads((out / "run.json").read_text())
                rates[name].append(record["counts"]["predicted"] / record["seconds"]["run"])
    base = rates["fp32 (default)"]
    return {"images": n, "rounds": rounds,
            "images_per_second": {k: [round(v, 2) for v in vals] for k, vals in rates.items()},
            "ratio_median": {k: round(statistics.median(a / b for a, b in zip(vals, base)), 2)
                             for k, vals in rates.items()}}


def render_against(r: dict, command: str) -> str:
    lines = [f"# `milzoo predict` throughput: this tree against {r['commit']}", "",
             f"Command: `{command}` on {r['cpu']}. {r['images']} two-channel 512 x 512 fields, {r['rounds']} rounds "
             "in alternating order, images per second from each run's `run.json` (masks, overlays and CSV written).",
             "", "| run | images / s per round |", "|---|---|"]
    lines += [f"| {name} | {', '.join(f'{v:.1f}' for v in vals)} |" for name, vals in r["images_per_second"].items()]
    lines += ["", "| precision | median ratio, this tree / " + r["commit"] + " |", "|---|---|"]
    lines += [f"| {p} | {ratio:.3f} |" for p, ratio in r["ratio_median"].items()]
    return "\n".join(lines) + "\n"


PRECISIONS = (("fp32", "onnxruntime"), ("int8", "openvino"), ("int8", "onnxruntime"), ("bf16", "openvino"))


def real_accuracy(data_root: Path, *, precisions=None) -> dict:
    """Every zoo model at each of ``precisions`` (precision, backend; default ``PRECISIONS``) on the real
    sets of ``benchmarks.realdata`` (4 x 4 mosaics and single cells, the images as they are): all fields,
    and the test half alone."""
    from benchmarks.realdata import run_scores
    from milcnn.model.registry import zoo

    out = {}
    for precision, backend in precisions or PRECISIONS:
        scores = run_scores(sorted(zoo()), data_root, k=4, precision=precision, backend=backend)
        for model, entry in scores.items():
            for set_name, modes in entry["sets"].items():
                r = modes["as is"]
                test = r.get("halves", {}).get("test", {})
                out.setdefault(f"{model} on {set_name}", {})[f"{precision} ({backend})"] = {
                    "mosaics": r["mosaics"]["accuracy"], "cells": r["cells"]["accuracy"],
                    "test_mosaics": test.get("mosaics", {}).get("accuracy"),
                    "test_cells": test.get("cells", {}).get("accuracy")}
    return out


def simulated_accuracy(*, precisions=None) -> dict:
    """The variants' figures on each model's simulated test set: measured here, through the SDK at each of
    ``precisions`` (default ``PRECISIONS``; masks compared with fp32's by IoU), where the test set's files
    are in this checkout; else as ``training.quantize`` recorded them (``"measured": False``)."""
    from milcnn import Classifier
    from milcnn.model.config import ModelInfo
    from milcnn.model.registry import lookup, zoo
    from training.quantize import evaluate_classifier, mask_iou

    out = {}
    for name in sorted(zoo()):
        info = ModelInfo.from_file(lookup(name).bundled_dir / "config.json")
        first = next(iter(info.variants.values())).metrics
        test_set = first["test_set"]
        if (ROOT / test_set).is_file():
            rows, reference = {}, None
            for precision, backend in precisions or PRECISIONS:
                clf = Classifier.from_hub(name, device="cpu", precision=precision, backend=backend)
                r = evaluate_classifier(clf, ROOT / test_set, keep_masks=True)
                if reference is None:  # PRECISIONS starts with fp32
                    reference = r["masks"]
                rows[f"{precision} ({backend})"] = {"accuracy": r["accuracy"],
                                                    "mask_iou_vs_fp32": round(mask_iou(reference, r["masks"]), 4)}
            out[name] = {"test_set": test_set, "rows": rows, "measured": True}
            continue
        rows = {"fp32 (onnxruntime)": {"accuracy": first["fp32_accuracy_sdk"], "mask_iou_vs_fp32": 1.0}}
        for precision, variant in info.variants.items():
            for backend, m in variant.metrics.get("by_backend", {}).items():
                rows[f"{precision} ({backend})"] = {"accuracy": m["accuracy"], "mask_iou_vs_fp32": m["mask_iou_vs_fp32"],
                                                    "fp32_accuracy_sdk": variant.metrics["fp32_accuracy_sdk"]}
        out[name] = {"test_set": test_set, "rows": rows, "measured": False}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pipeline-images", type=int, default=120)
    parser.add_argument("--pipeline-rounds", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], help="a configuration to leave out (repeatable)")
    parser.add_argument("--data", type=Path, default=None, help="the real labelled data (default: benchmarks.realdata's)")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers",
                        help="the report's path without its suffix: .json and .md are written")
    parser.add_argument("--pipeline-against", metavar="COMMIT", default=None,
                        help="measure only milzoo predict's throughput against COMMIT's SDK (fp32 and int8); "
                             "writes the report to --out (default benchmarks/results/throughput.md)")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: write the .md again from the .json (after a change to the wording)")
    args = parser.parse_args(argv)
    if args.pipeline_against:
        from benchmarks.throughput import against_commit

        result = against_commit(args.pipeline_against, args.pipeline_images, args.pipeline_rounds)
        command = "python -m benchmarks.peers " + " ".join(argv if argv is not None else sys.argv[1:])
        out = RESULTS / "throughput" if args.out == RESULTS / "peers" else args.out
        with write_atomic(out.with_name(out.name + ".json"), "w") as fh:
            fh.write(json.dumps({"command": command, **result}, indent=2) + "\n")
        text = render_against(result, command)
        with write_atomic(out.with_name(out.name + ".md"), "w") as fh:
            fh.write(text)
        print(text)
        return 0
    if args.render_only:
        text = render(json.loads(args.out.with_name(args.out.name + ".json").read_text()))
        with write_atomic(args.out.with_name(args.out.name + ".md"), "w") as fh:
            fh.write(text)
        return 0
    import onnxruntime
    import openvino
    import torch

    from milcnn.runtime.openvino import bf16_supported

    bf16 = bf16_supported()
    precisions = tuple(p for p in PRECISIONS if bf16 or p[0] != "bf16")

    big = image_of(1024, 1344)[None]
    small = np.stack([np.roll(image_of(512, 512), 61 * i, axis=2) for i in range(BATCH)])
    result = {
        "command": "python -m benchmarks.peers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": cpu_description(), "cores": os.cpu_count(), "threads": THREADS,
                    "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                    "openvino": openvino.__version__, "torch": torch.__version__, "bf16": bf16},
        "gop": {"1024x1344": round(_gop(1024, 1344), 2), "512x512": round(_gop(512, 512), 2)},
        "peaks_before": matmul_peak(bf16=bf16),
        "1024x1344": time_configurations(big, rounds=args.rounds, reps=args.reps, skip=tuple(args.skip), bf16=bf16),
        "512x512": time_configurations(small, rounds=args.rounds, reps=max(1, args.reps - 1), skip=tuple(args.skip),
                                       bf16=bf16),
        "peaks_after": matmul_peak(bf16=bf16),
        "steps_1024x1344": sdk_steps(big[0]),
        # before the pipeline, whose thousands of files are deleted when it ends: ext4 without a journal (this
        # machine's disk) then creates files slowly for a minute or more, skipping the freed inodes one by one
        # (recently_deleted in a profile), and the overlay's figure would carry that
        "cpu_per_image": cpu_per_image(),
        "pipeline": pipeline_throughput(args.pipeline_images, args.pipeline_rounds, bf16=bf16),
        "simulated": simulated_accuracy(precisions=precisions),
        "real": real_accuracy(args.data or DEFAULT_REAL_DATA, precisions=precisions),
    }
    result["peaks"] = peaks_of(result)
    result["targets"] = targets(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with write_atomic(args.out.with_name(args.out.name + ".json"), "w") as fh:
        fh.write(json.dumps(result, indent=2) + "\n")
    text = render(result)
    with write_atomic(args.out.with_name(args.out.name + ".md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


def peaks_of(r: dict) -> dict:
    """Each precision's peak for the fractions: the best matrix multiply measured before and after
    the timed rounds (this shared host's speed drifts within a run), and never below a rate some
    network reached in the run (a peak under an achieved rate is a slow measurement, not a peak)."""
    by_library = {k: max(r["peaks_before"]["by_library"][k], r["peaks_after"]["by_library"][k])
                  for k in r["peaks_before"]["by_library"]}
    peak, achieved = {}, {}
    for precision in r["peaks_before"]["peak"]:
        peak[precision] = max(r["peaks_before"]["peak"][precision], r["peaks_after"]["peak"][precision])
        for size in ("1024x1344", "512x512"):
            for v in r[size].values():
                if v.get("precision") == precision and "ms" in v:
                    rate = r["gop"][size] / (v["ms"] / 1000)  # ms per image at both sizes
                    achieved[precision] = max(achieved.get(precision, 0.0), rate)
        peak[precision] = round(max(peak[precision], achieved.get(precision, 0.0)), 1)
    return {"by_library": by_library, "peak": peak, "achieved": {k: round(v, 1) for k, v in achieved.items()}}


def targets(r: dict) -> dict:
    rows = r["1024x1344"]
    timed = {k: v for k, v in rows.items() if "ms" in v}
    sdk = min((k for k, v in timed.items() if v["kind"] == "sdk"), key=lambda k: timed[k]["ms"])
    peer = min((k for k, v in timed.items() if v["kind"] == "peer"), key=lambda k: timed[k]["ms"])
    precision = timed[sdk]["precision"]
    peak = r["peaks"]["peak"][precision]
    sdk_rate = r["gop"]["1024x1344"] / (timed[sdk]["ms"] / 1000)
    return {"fastest_sdk": sdk, "fastest_peer": peer, "sdk_ms": timed[sdk]["ms"], "peer_ms": timed[peer]["ms"],
            "ratio_vs_fastest_peer": round(timed[peer]["ms"] / timed[sdk]["ms"], 3),
            "sdk_fraction_of_peak": round(sdk_rate / peak, 3), "peak_used": peak,
            "pipeline_ratio": max(v for k, v in r["pipeline"]["ratio_median"].items() if k in ("int8", "bf16"))}


_ROWS = (("fp32 (onnxruntime)", "fp32"), ("int8 (openvino)", "int8"), ("int8 (onnxruntime)", "int8"),
         ("bf16 (openvino)", "bf16"))


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def render(r: dict) -> str:
    m, t = r["machine"], r["targets"]
    lines = ["# The SDK against its peers", "",
             f"Made by `{r['command'].strip()}` (see its docstring) on {m['cpu']}, {m['cores']} cores, "
             f"{m['threads']} threads per runtime; Python {m['python']}, onnxruntime {m['onnxruntime']}, "
             f"OpenVINO {m['openvino']}, PyTorch {m['torch']}. Model: `yeast-loc` "
             f"({r['gop']['1024x1344']} GOP per 1024 x 1344 image, {r['gop']['512x512']} per 512 x 512).", "",
             "Peaks used for the fractions below: " + ", ".join(
                 f"{k} {v} G{'OP' if k == 'int8' else 'FLOP'}/s" for k, v in r["peaks"]["peak"].items())
             + ": the best 4096 x 4096 matrix multiply of any library, measured before and after the timed "
             "rounds (" + ", ".join(f"{k} {v}" for k, v in r["peaks"]["by_library"].items())
             + "), or the fastest network of that precision in this run where it was faster ("
             + ", ".join(f"{k} {v}" for k, v in r["peaks"].get("achieved", {}).items()) + ")."
             + ("" if m.get("bf16", True) else " This CPU has no bf16 instructions: every bf16 row is left out."),
             ""]
    for size in ("1024x1344", "512x512"):
        rows = r[size]
        gop = r["gop"][size]
        sdk_fp32 = rows.get("SDK fp32 (onnxruntime)", {}).get("ms")
        lines += [f"## {size.replace('x', ' x ')}" + (" (batches of 8, per image)" if size == "512x512" else ""), "",
                  "| configuration | what is timed | ms / image | vs SDK fp32 | G(FL)OP/s | fraction of its precision's "
                  "peak | first call s |", "|---|---|---|---|---|---|---|"]
        for name, v in sorted(rows.items(), key=lambda kv: kv[1].get("ms", 1e9)):
            what = "image in memory to mask" if v["kind"] == "sdk" else "network only"
            if "ms" not in v:
                lines.append(f"| {name} | {what} | failed: {v['error']} | | | | |")
                continue
            rate = gop / (v["ms"] / 1000)
            lines.append(f"| {name} | {what} | {v['ms']:.1f} | {sdk_fp32 / v['ms']:.2f}x | {rate:.0f} | "
                         f"{rate / r['peaks']['peak'][v['precision']]:.2f} | {v['first_call_s']} |")
        lines.append("")
    s = r["steps_1024x1344"]
    if "prepare" in s:
        steps = (f"prepare {s['prepare']} ms (the normalisation's percentiles"
                 + ("; the normalising itself runs in the network's graph" if s.get("in_graph") else ", normalising")
                 + f"), network {s['network']} ms, mask {s['mask']} ms")
    else:  # results of the earlier step split
        steps = f"normalise {s['normalise']} ms, network {s['network']} ms, mask {s['mask']} ms"
    lines += [f"SDK int8 per step at 1024 x 1344 ({s['backend']}): {steps}.", "",
              "## `milzoo predict` on a folder of 512 x 512 images", "",
              f"{r['pipeline']['images']} two-channel fields, {r['pipeline']['rounds']} rounds in alternating order, "
              "images per second from each run's `run.json` (masks, overlays and CSV written unless said; 2 inference "
              "streams). The busy row runs while two other processes each keep a core busy.",
              "", "| precision | images / s per round | median ratio to the fp32 default |", "|---|---|---|"]
    for name, rates in r["pipeline"]["images_per_second"].items():
        lines.append(f"| {name} | {', '.join(f'{v:.1f}' for v in rates)} | {r['pipeline']['ratio_median'][name]:.2f} |")
    if "cpu_per_image" in r:
        c = r["cpu_per_image"]
        lines += ["", "CPU ms per field of each step (yeast-loc, one thread, median; the networks as each stream runs "
                  "them): " + ", ".join(f"{k} {v:.2f}" for k, v in c["ms"].items()) + ".",
                  f"Both cores busy, int8 : fp32 throughput cannot pass (fp32 network + the rest) / (int8 network + "
                  f"the rest) = **{c['bound']:.2f}x**, the rest being {c['rest']:.2f} ms; "
                  + (f"3x needs the rest under {c['rest_for_3x']:.2f} ms." if c["rest_for_3x"] > 0 else
                     f"3x is out of reach on this CPU: the fp32 network takes only "
                     f"{c['ms']['network fp32'] / c['ms']['network int8']:.2f}x the int8 one's time.")]
    lines += ["", "## Accuracy at each precision", "",
              "Simulated test sets (each variant through the SDK, masks compared with fp32's by IoU; measured in "
              "this run, or where the test set is not in the checkout as `python -m training.quantize` recorded it):",
              "", "| model | test set | measured | " + " | ".join(n for n, _ in _ROWS) + " |",
              "|---|---|---|" + "---|" * len(_ROWS)]
    for model, entry in r["simulated"].items():
        cells = [f"{v['accuracy']:.4f} (masks {v['mask_iou_vs_fp32']:.3f})" if (v := entry["rows"].get(n)) else "-"
                 for n, _ in _ROWS]
        measured = "in this run" if entry.get("measured") else "recorded"
        lines.append(f"| `{model}` | `{entry['test_set']}` | {measured} | " + " | ".join(cells) + " |")
    lines += ["", "Real sets of `python -m benchmarks.realdata` (images as they are; 4 x 4 mosaics and single cells "
              "right, all fields, then the test half alone: fields that chose no setting of any model):", "",
              "| model on real set | " + " | ".join(n for n, _ in _ROWS) + " |", "|---|" + "---|" * len(_ROWS)]
    for key, by in r["real"].items():
        cells = [f"{100 * v['mosaics']:.1f} % / {100 * v['cells']:.1f} % (test {_pct(v['test_mosaics'])} / "
                 f"{_pct(v['test_cells'])})" if (v := by.get(n)) else "-" for n, _ in _ROWS]
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", "",
              "| target | measured | |", "|---|---|---|",
              f"| SDK end to end at its fastest precision >= 1.0x the fastest peer's network-only time (1024 x 1344) "
              f"| {t['fastest_sdk']} {t['sdk_ms']:.1f} ms vs {t['fastest_peer']} {t['peer_ms']:.1f} ms: "
              f"{t['ratio_vs_fastest_peer']:.2f}x | {'met' if t['ratio_vs_fastest_peer'] >= 1.0 else 'missed'} |",
              f"| SDK end to end >= 0.85 of the matrix-multiply peak of its precision | {t['sdk_fraction_of_peak']:.2f} "
              f"of {t['peak_used']} | {'met' if t['sdk_fraction_of_peak'] >= 0.85 else 'missed'} |",
              f"| `milzoo predict` on 512 x 512 images >= 3x the fp32 default | {t['pipeline_ratio']:.2f}x | "
              f"{'met' if t['pipeline_ratio'] >= 3 else 'missed'} |", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
