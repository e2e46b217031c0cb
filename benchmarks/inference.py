"""Inference speed of yeast-loc: PyTorch vs the SDK (onnxruntime), fp32 vs int8 vs bf16, against the hardware.

Usage (the command behind benchmarks/results/inference.md and BENCHMARKS.md)::

    python -m benchmarks.inference

Every configuration runs in its own fresh process (so its peak RSS is its own) on the same
simulated yeast field, cropped to 512 x 512, 1024 x 1344 and 2048 x 2048:

- ``torch-eager``, ``torch-jit`` (trace + freeze), ``torch-bf16`` (autocast): the training
  package's MILCNN carrying yeast-loc's own weights (read back from its model.onnx, where the
  batch norms are folded; the check below shows the two give the same maps);
- ``ort-default`` (``InferenceSession`` with default options), ``ort-sdk`` (the SDK's session:
  full graph optimisation, one thread per core), ``ort-int8`` (model.int8.onnx);
- ``sdk-fp32`` / ``sdk-int8``: ``Classifier.predict`` on the uint16 image, pre- and
  post-processing included (normalisation, network, mask).

It also measures the machine's matrix-multiply peak per precision (the best of numpy,
PyTorch and onnxruntime on 4096 x 4096 products), how cost grows with pixel count up to
8192 x 8192 (tiled), tiled-vs-whole agreement, and the ``milzoo predict`` pipeline against
model-only throughput on the 220 simulated test images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import cpu_description, has_bf16, has_vnni
from milcnn.io.images import write_atomic

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo" / "yeast-loc"
SIZES = [(512, 512), (1024, 1344), (2048, 2048)]
SCALING = [(512, 512), (1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192)]
ROWS = ["torch-eager", "torch-jit", "torch-bf16", "ort-default", "ort-sdk", "ort-int8", "sdk-fp32", "sdk-int8"]
PRECISION = {"torch-bf16": "bf16", "ort-int8": "int8", "sdk-int8": "int8"}
FIELD = ROOT / "data" / "bench" / "yeast-field-2048.tif"
TEST_IMAGES = ROOT / "data" / "yeast-test" / "images"


# ---------------------------------------------------------------- inputs


def field() -> np.ndarray:
    """A simulated 2048 x 2048 two-channel yeast field (made once, cached under data/bench)."""
    import tifffile

    if not FIELD.is_file():
        from training.data.yeast import YeastParams, simulate_yeast_image

        image, _ = simulate_yeast_image("nucleus", np.random.default_rng(2016), YeastParams(size=2048))
        FIELD.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(FIELD, image)
    return tifffile.imread(FIELD)


def image_of(h: int, w: int) -> np.ndarray:
    base = field()
    reps = (1, -(-h // base.shape[1]), -(-w // base.shape[2]))
    tiled = np.tile(base, reps)
    return tiled if tiled.shape[1:] == (h, w) else np.ascontiguousarray(tiled[:, :h, :w])  # one copy of a huge input


def torch_model():
    """yeast-loc as the training package's MILCNN, weights read back from model.onnx."""
    import onnx
    import torch
    from onnx import numpy_helper

    from milcnn.model.config import ModelInfo
    from training.model import MILCNN, ModelConfig

    info = ModelInfo.from_file(ZOO / "config.json")
    arch = info.architecture
    model = MILCNN(ModelConfig(channels=info.channels, classes=info.classes, width=arch["width"],
                               output_stride=info.output_stride, context=arch["context"],
                               pooling=info.pooling["name"], pooling_params=info.pooling.get("params", {})))
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in onnx.load(str(ZOO / "model.onnx")).graph.initializer}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Sequential) and f"{name}.0.weight" in weights:
                conv, bn = module[0], module[1]
                conv.weight.copy_(weights[f"{name}.0.weight"])
                bn.running_mean.zero_()
                bn.running_var.fill_(1 - bn.eps)  # BN becomes + bias exactly
                bn.weight.fill_(1.0)
                bn.bias.copy_(weights[f"{name}.0.weight_bias"])
        model.head.weight.copy_(weights["head.weight"])
        model.head.bias.copy_(weights["head.bias"])
    return model.eval()


# ---------------------------------------------------------------- one configuration, in its own process


def run_row(row: str, h: int, w: int, reps: int) -> dict:
    if row.startswith("torch"):  # only torch rows pay for importing torch (peak RSS is per process)
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    image = image_of(h, w)
    from milcnn import Classifier
    from milcnn.process.preprocess import normalize
    from milcnn.runtime.onnx import OnnxModel

    x = normalize(image)[None]
    extra = {}
    if row.startswith("torch"):
        model = torch_model()
        xt = torch.from_numpy(x)
        if row == "torch-jit":
            with torch.no_grad():
                model = torch.jit.freeze(torch.jit.trace(model, xt, strict=False))

        def step():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=row == "torch-bf16"):
                return model(xt)
    elif row == "ort-default":
        import onnxruntime as ort

        session = ort.InferenceSession(str(ZOO / "model.onnx"), providers=["CPUExecutionProvider"])

        def step():
            return session.run(None, {"image": x})
    elif row in ("ort-sdk", "ort-int8"):
        model = OnnxModel(ZOO / ("model.onnx" if row == "ort-sdk" else "model.int8.onnx"), device="cpu")

        def step():
            return model.run(x)
    else:
        clf = Classifier.from_hub("yeast-loc", device="cpu", precision=row.split("-")[1])

        def step():
            return clf.predict(image, tile_size=extra.get("tile_size")).mask
    t0 = time.perf_counter()
    step()  # warm-up (and JIT / graph optimisation)
    extra["first_call_s"] = round(time.perf_counter() - t0, 3)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"row": row, "height": h, "width": w, "reps": reps, "ms": 1000 * statistics.median(times),
            "ms_min": 1000 * min(times), "peak_rss_mb": peak_rss_mb(),
            **extra}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(*, bf16: bool | None = None) -> dict:
    """Best GFLOP/s (int8: GOP/s) of 4096 x 4096 products per precision and library; bf16 only where the
    CPU has bf16 instructions (``bf16``, default ``benchmarks.machine.has_bf16()``), PyTorch's int8 only
    where it has VNNI (``has_vnni``; onnxruntime's int8 is measured on every CPU)."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    n = 4096
    torch.set_num_threads(os.cpu_count() or 1)

    def best(fn, reps=5):
        fn()
        return min(_timed(fn) for _ in range(reps))

    out = {}
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    out["fp32 numpy"] = 2 * n**3 / best(lambda: a @ b) / 1e9
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["fp32 torch"] = 2 * n**3 / best(lambda: ta @ tb) / 1e9
    if has_bf16() if bf16 is None else bf16:
        ha, hb = ta.bfloat16(), tb.bfloat16()
        out["bf16 torch"] = 2 * n**3 / best(lambda: ha @ hb) / 1e9
    if has_vnni():
        ia = torch.randint(-100, 100, (n, n), dtype=torch.int8)
        ib = torch.randint(-100, 100, (n, n), dtype=torch.int8)
        out["int8 torch"] = 2 * n**3 / best(lambda: torch._int_mm(ia, ib)) / 1e9
    for precision, op, dtype, feeds in (
            ("fp32", "MatMul", TensorProto.FLOAT, {"A": a, "B": b}),
            ("int8", "MatMulInteger", TensorProto.UINT8,
             {"A": np.random.randint(0, 255, (n, n), dtype=np.uint8), "B": np.random.randint(-100, 100, (n, n), dtype=np.int8)})):
        b_type = TensorProto.INT8 if op == "MatMulInteger" else dtype
        graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["C"])], "mm",
                                  [helper.make_tensor_value_info("A", dtype, [n, n]),
                                   helper.make_tensor_value_info("B", b_type, [n, n])],
                                  [helper.make_tensor_value_info("C", TensorProto.INT32 if op == "MatMulInteger"
                                                                 else TensorProto.FLOAT, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out[f"{precision} onnxruntime"] = 2 * n**3 / best(lambda: session.run(None, feeds)) / 1e9
    peaks = {}
    for key, value in out.items():
        precision = key.split()[0]
        peaks[precision] = max(peaks.get(precision, 0.0), value)
    return {"by_library": {k: round(v, 1) for k, v in out.items()}, "peak": {k: round(v, 1) for k, v in peaks.items()}}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tiling_check() -> dict:
    """A 2048 x 2048 field whole vs in 512 and 1024 px tiles: largest differences."""
    from milcnn import Classifier

    clf = Classifier.from_hub("yeast-loc", device="cpu")
    image = image_of(2048, 2048)
    whole = clf.predict(image)
    out = {}
    for tile in (512, 1024):
        tiled = clf.predict(image, tile_size=tile)
        out[str(tile)] = {
            "max_abs_probability_difference": float(max(abs(whole.probabilities[c] - tiled.probabilities[c])
                                                        for c in clf.classes)),
            "max_abs_map_difference": float(np.abs(whole.maps - tiled.maps).max()),
            "mask_pixels_differing": int((whole.mask != tiled.mask).sum()),
            "label_equal": whole.label == tiled.label,
        }
    return out


PIPELINE_CONFIGS = [  # (workers, streams, overlays); streams None: the default (2 on this CPU)
    (4, None, False),
    (1, None, True), (2, None, True), (4, None, True),  # (4, None, True): milzoo predict's defaults
    (4, 1, True),  # one stream on every core: the pipeline before streams
]


def pipeline_check(rounds: int = 10, chunk: int = 110) -> dict:
    """``milzoo predict``'s pipeline vs model-only throughput on the 220 simulated test images.

    This machine's speed drifts by 10-15 % over minutes, so every pipeline run is paired with a
    model-only run on the same ``chunk`` images, just before it in even rounds and just after
    it in odd ones (so a steady drift favours neither), and its ratio is taken within the pair;
    the medians over ``rounds`` rounds are reported.

    Model-only is the network alone on images already read and normalised in memory, one at
    a time on the SDK's session (every core), as ``Classifier.predict`` runs them; and, once a
    round for context, two single-threaded sessions side by side (the streams the pipeline
    uses), the most the network alone reaches here.
    """
    from concurrent.futures import ThreadPoolExecutor

    from milcnn import Classifier
    from milcnn.batch.pipeline import default_streams, run_pipeline

    paths = sorted(TEST_IMAGES.glob("*.tif"))
    clf = Classifier.from_hub("yeast-loc", device="cpu")
    xs = [clf.prepare_input(p).x[None] for p in paths]
    streams = default_streams(clf)
    single = clf.model.with_threads(1)
    for x in xs[:3]:
        clf.model.run(x)
        single.run(x)

    def timed(fn, n: int) -> float:
        t0 = time.perf_counter()
        done = fn()
        assert done == n, f"{done} of {n} images"
        return n / (time.perf_counter() - t0)

    def model_only(batch):
        for x in batch:
            clf.model.run(x)
        return len(batch)

    def model_only_streams(batch):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(single.run, batch))
        return len(batch)

    pairs = [[] for _ in PIPELINE_CONFIGS]  # (model-only, pipeline) images/s per round
    alone, streamed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            start = (r * chunk) % len(paths)
            sub, sub_x = paths[start:start + chunk], xs[start:start + chunk]
            for i, (workers, n_streams, overlays) in enumerate(PIPELINE_CONFIGS):
                out = Path(tmp) / f"{r}-{i}"
                runs = {
                    "base": lambda: timed(lambda: model_only(sub_x), len(sub)),
                    "rate": lambda: timed(lambda: sum(pred is not None for _, pred in run_pipeline(
                        clf, sub, out, workers=workers, streams=n_streams, overlays=overlays)), len(sub)),
                }
                order = ("base", "rate") if r % 2 == 0 else ("rate", "base")
                measured = {name: runs[name]() for name in order}
                pairs[i].append((measured["base"], measured["rate"]))
            alone.append(timed(lambda: model_only(sub_x), len(sub)))
            streamed.append(timed(lambda: model_only_streams(sub_x), len(sub)))
            print(f"  round {r + 1}/{rounds}: " + " ".join(f"{p[-1][1] / p[-1][0]:.2f}" for p in pairs),
                  file=sys.stderr)
    med = statistics.median
    out = {"images": len(paths), "rounds": rounds, "images_per_round": chunk, "default_streams": streams,
           "model_only_images_per_s": med(b for p in pairs for b, _ in p),
           "model_only_streams_images_per_s": med(streamed),
           "streams_over_model_only": med(s / a for s, a in zip(streamed, alone)), "runs": []}
    for (workers, n_streams, overlays), p in zip(PIPELINE_CONFIGS, pairs):
        ratios = [rate / base for base, rate in p]
        out["runs"].append({"workers": workers, "streams": n_streams or streams, "overlays": overlays,
                            "images_per_s": med(rate for _, rate in p), "fraction_of_model_only": med(ratios),
                            "fraction_of_model_only_range": [min(ratios), max(ratios)],
                            "fraction_of_model_only_rounds": ratios})
    return out


def pipeline_stage_costs(n: int = 60, reps: int = 5) -> dict:
    """CPU time per image (ms, best of ``reps`` passes over ``n`` test images, one thread) of
    each step ``milzoo predict`` does beside the network."""
    from milcnn import Classifier
    from milcnn.io.images import read_image, write_tiff
    from milcnn.outputs.overlay import save_overlay
    from milcnn.process.postprocess import mask_from_maps

    paths = sorted(TEST_IMAGES.glob("*.tif"))[:n]
    clf = Classifier.from_hub("yeast-loc", device="cpu")
    images = [read_image(p) for p in paths]
    items = [clf.prepare_input(p) for p in paths]
    preds = [clf.predict_prepared([item])[0] for item in items]
    masks = [pred.mask for pred in preds]

    def cpu_ms(step) -> float:
        best = float("inf")
        for _ in range(reps):
            t0 = time.thread_time()
            for i in range(len(paths)):
                step(i)
            best = min(best, (time.thread_time() - t0) / len(paths) * 1000)
        return best

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        return {
            "read": cpu_ms(lambda i: read_image(paths[i])),
            "normalise": cpu_ms(lambda i: clf._normalized(images[i])),
            "mask": cpu_ms(lambda i: mask_from_maps(preds[i].maps, preds[i].stride, preds[i].shape,
                                                    preds[i].threshold)),
            "mask_tiff": cpu_ms(lambda i: write_tiff(out / f"{i}.tif", masks[i], durable=False)),
            "overlay": cpu_ms(lambda i: save_overlay(out / f"{i}.png", items[i].chw, masks[i], clf.classes,
                                                     title=f"{paths[i].name}\n{preds[i].top} (p=0.99)",
                                                     normalized=items[i].x, durable=False)),
        }


# ---------------------------------------------------------------- orchestration


def in_subprocess(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.inference", *args], capture_output=True, text=True,
                          cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(reps: int) -> dict:
    import onnxruntime as ort
    import torch

    from training.model import count_flops

    field()
    model = torch_model()
    results = {"machine": {"cpu": cpu_description(), "cores": os.cpu_count(), "python": platform.python_version(),
                           "torch": torch.__version__, "onnxruntime": ort.__version__,
                           "providers": ort.get_available_providers()}}
    print("matmul peak ...", file=sys.stderr)
    results["matmul"] = in_subprocess("--peak")
    # convolution FLOPs are exactly proportional to pixels for sizes that are multiples of the stride,
    # so the huge sizes are scaled from 1024 x 1024 instead of run through eager PyTorch
    per_pixel = count_flops(model, 1024, 1024) / (1024 * 1024)
    results["flops"] = {f"{h}x{w}": count_flops(model, h, w) if h * w <= 2048 * 2048 else int(per_pixel * h * w)
                        for h, w in sorted(set(SIZES + SCALING))}
    rows = []
    here = ROWS if has_bf16() else [r for r in ROWS if PRECISION.get(r) != "bf16"]  # else PyTorch emulates bf16
    for h, w in SIZES:
        for row in here:
            print(f"{row} {h}x{w} ...", file=sys.stderr)
            rows.append({"row": row, "height": h, "width": w, **in_subprocess("--row", row, f"{h}x{w}", str(reps))})
    results["rows"] = rows
    scaling = []
    for h, w in SCALING:
        for row in ("sdk-fp32", "sdk-int8"):
            print(f"scaling {row} {h}x{w} ...", file=sys.stderr)
            n = reps if h * w <= 2048 * 2048 else 2
            scaling.append({"row": row, "height": h, "width": w, **in_subprocess("--row", row, f"{h}x{w}", str(n))})
    results["scaling"] = scaling
    print("torch vs onnx maps ...", file=sys.stderr)
    results["weights_check"] = weights_check()
    print("tiling ...", file=sys.stderr)
    results["tiling"] = tiling_check()
    print("pipeline ...", file=sys.stderr)
    results["pipeline"] = {**pipeline_check(), "stages_cpu_ms": pipeline_stage_costs()}
    from milcnn.model.config import ModelInfo

    results["int8_accuracy"] = ModelInfo.from_file(ZOO / "config.json").variants["int8"].metrics
    return results


def weights_check() -> dict:
    import torch

    from milcnn.process.preprocess import normalize
    from milcnn.runtime.onnx import OnnxModel

    x = normalize(image_of(512, 512))[None]
    with torch.no_grad():
        ref = torch_model()(torch.from_numpy(x)).class_maps.numpy()
    _, maps = OnnxModel(ZOO / "model.onnx", device="cpu").run(x)
    return {"max_abs_map_difference_torch_vs_onnx": float(np.abs(ref - maps).max())}


def _fit(points: list[tuple[float, float]]) -> dict:
    """Least-squares ms = a + b * megapixels, with R^2."""
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return {"intercept_ms": float(a), "ms_per_megapixel": float(b), "r2": float(r2)}


def render(r: dict) -> str:
    peak = r["matmul"]["peak"]
    lines = [
        "# Inference speed",
        "",
        f"Made by `python -m benchmarks.inference` on {r['machine']['cpu']} ({r['machine']['cores']} cores), "
        f"Python {r['machine']['python']}, torch {r['machine']['torch']}, onnxruntime {r['machine']['onnxruntime']} "
        f"(providers: {', '.join(r['machine']['providers'])}). Model: `yeast-loc` (2 channels, 11 classes). Each "
        "configuration runs in a fresh process; times are medians; peak RSS is that process's maximum.",
        "",
        "## Matrix-multiply peak of this machine (4096 x 4096)",
        "",
        "| precision | library | GFLOP/s (int8: GOP/s) |",
        "|---|---|---|",
        *[f"| {k.split()[0]} | {k.split()[1]} | {v:.1f} |" for k, v in r["matmul"]["by_library"].items()],
        "",
        "Peak used below: " + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()) + " (best library)."
        + ("" if "bf16" in peak else " This CPU has no bf16 instructions: no bf16 row."),
        "",
        "## Per image",
        "",
        "FLOPs count 2 per multiply-add of every convolution (`training.model.count_flops`); the fraction "
        "is achieved FLOP/s over the peak of that precision.",
        "",
        "| size | configuration | ms / image | images / s | peak RSS MB | GFLOP / image | GFLOP/s | fraction of peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        if "error" in row:
            lines.append(f"| {row['height']} x {row['width']} | {row['row']} | failed: {row['error']} | | | | | |")
            continue
        flops = r["flops"][f"{row['height']}x{row['width']}"]
        rate = flops / (row["ms"] / 1000) / 1e9
        p = peak[PRECISION.get(row["row"], "fp32")]
        lines.append(f"| {row['height']} x {row['width']} | {row['row']} | {row['ms']:.1f} | {1000 / row['ms']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} | {flops / 1e9:.1f} | {rate:.1f} | {rate / p:.2f} |")
    get = {(x["row"], x["height"], x["width"]): x for x in r["rows"] if "error" not in x}
    h, w = 1024, 1344
    ratios = []
    if all((k, h, w) in get for k in ("torch-eager", "ort-sdk", "sdk-fp32", "sdk-int8")):
        eager, ort_sdk, sdk32, sdk8 = (get[(k, h, w)]["ms"] for k in ("torch-eager", "ort-sdk", "sdk-fp32", "sdk-int8"))
        flops = r["flops"][f"{h}x{w}"]
        ratios = [
            "## Targets at 1024 x 1344",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| SDK fp32 `predict` (pre/post included) vs PyTorch eager, images per second | {eager / sdk32:.2f}x | >= 1.5x |",
            f"| onnxruntime fp32 network alone vs PyTorch eager | {eager / ort_sdk:.2f}x | |",
            f"| SDK fp32 `predict` achieved FLOP/s / fp32 matmul peak | {flops / (sdk32 / 1000) / 1e9 / peak['fp32']:.2f} | >= 0.80 |",
            f"| SDK int8 `predict` vs SDK fp32, images per second | {sdk32 / sdk8:.2f}x | >= 2x |",
            f"| int8 accuracy change (220 test images) | {-r['int8_accuracy']['accuracy_drop_points']:+.2f} points "
            f"(IoU {r['int8_accuracy']['fp32_mean_iou_sdk']:.3f} -> {r['int8_accuracy']['mean_iou']:.3f}) | within 1 point |",
            "",
        ]
    lines += [""] + ratios
    lines += ["## Cost against pixel count (SDK `predict`, images over 2048 x 2048 tiled in 1024 px tiles)", "",
              "| size | megapixels | fp32 ms | fp32 ms / MP | fp32 peak RSS MB | int8 ms | int8 ms / MP | int8 peak RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    scale = {(x["row"], x["height"]): x for x in r["scaling"] if "error" not in x}
    fits = {}
    for prec in ("fp32", "int8"):
        pts = [(x["height"] * x["width"] / 1e6, x["ms"]) for x in r["scaling"] if x["row"] == f"sdk-{prec}" and "ms" in x]
        if len(pts) >= 2:
            fits[prec] = _fit(pts)
    for h, w in SCALING:
        mp = h * w / 1e6
        a, b = scale.get(("sdk-fp32", h)), scale.get(("sdk-int8", h))
        cell = lambda x: (f"{x['ms']:.0f} | {x['ms'] / mp:.0f} | {x['peak_rss_mb']:.0f}" if x else "failed | | ")
        lines.append(f"| {h} x {w} | {mp:.2f} | {cell(a)} | {cell(b)} |")
    lines.append("")
    for prec, f in fits.items():
        lines.append(f"Linear fit, {prec}: ms = {f['intercept_ms']:.1f} + {f['ms_per_megapixel']:.1f} x megapixels, "
                     f"R^2 = {f['r2']:.4f}.")
    t = r["tiling"]
    lines += ["", "## Tiled vs whole-image inference (2048 x 2048)", "",
              "| tile | max abs probability difference | max abs class-map difference | mask pixels differing | same label |",
              "|---|---|---|---|---|",
              *[f"| {k} px | {v['max_abs_probability_difference']:.2e} | {v['max_abs_map_difference']:.2e} | "
                f"{v['mask_pixels_differing']} of {2048 * 2048} | {v['label_equal']} |" for k, v in t.items()],
              "", f"PyTorch (weights read back from model.onnx) vs onnxruntime class maps: max abs difference "
              f"{r['weights_check']['max_abs_map_difference_torch_vs_onnx']:.1e}.", ""]
    p = r["pipeline"]
    lines += ["## `milzoo predict` pipeline", "",
              *([f"Re-measured on its own, later than the sections above: `{p['command']}`.", ""] if "command" in p else []),
              f"{p['images']} simulated 512 x 512 test images (`data/yeast-test/images`), read from disk; masks (and "
              f"overlays) written. Model-only: the network alone on the same images preloaded and normalised, one at "
              f"a time on the SDK's session ({p['model_only_images_per_s']:.2f} images/s). Each pipeline run is paired "
              f"with a model-only run on the same {p['images_per_round']} images, just before it in even rounds and "
              f"just after it in odd ones; the table gives "
              f"medians over {p['rounds']} rounds of the ratios within pairs. Two single-threaded sessions side by "
              f"side, the most the network alone reaches here, give {p['streams_over_model_only']:.2f}x model-only. "
              f"`milzoo predict`'s defaults: 4 workers, {p['default_streams']} streams, overlays on.", "",
              "| workers | streams | overlays | images / s | fraction of model-only (range over rounds) "
              "| rounds >= 0.9 |",
              "|---|---|---|---|---|---|",
              *[f"| {x['workers']} | {x['streams']} | {'yes' if x['overlays'] else 'no'} | {x['images_per_s']:.2f} | "
                f"{x['fraction_of_model_only']:.2f} ({x['fraction_of_model_only_range'][0]:.2f}-"
                f"{x['fraction_of_model_only_range'][1]:.2f}) | {_rounds_reaching(x, 0.9)} |" for x in p["runs"]], ""]
    if "stages_cpu_ms" in p:
        st = p["stages_cpu_ms"]
        lines += ["CPU per 512 x 512 image of the steps beside the network (one thread, best of 5 passes over 60 "
                  "images): " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} ms" for k, v in st.items())
                  + f"; {sum(st.values()):.1f} ms in all.", ""]
    return "\n".join(lines)


def _rounds_reaching(run: dict, target: float) -> str:
    """'k of n' rounds whose ratio reaches ``target`` (runs recorded before per-round ratios were kept: '')."""
    ratios = run.get("fraction_of_model_only_rounds")
    return "" if ratios is None else f"{sum(r >= target for r in ratios)} of {len(ratios)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--row", nargs=3, metavar=("ROW", "HxW", "REPS"), help=argparse.SUPPRESS)
    parser.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help="re-render the .md from the committed .json")
    parser.add_argument("--only-pipeline", action="store_true",
                        help="re-measure only the milzoo predict pipeline section, keeping the rest of the .json")
    args = parser.parse_args(argv)
    if args.peak:
        print(json.dumps(matmul_peak()))
        return 0
    if args.row:
        h, w = map(int, args.row[1].split("x"))
        print(json.dumps(run_row(args.row[0], h, w, int(args.row[2]))))
        return 0
    if args.render:
        results = json.loads((args.out / "inference.json").read_text())
    elif args.only_pipeline:
        results = json.loads((args.out / "inference.json").read_text())
        results["pipeline"] = {**pipeline_check(), "stages_cpu_ms": pipeline_stage_costs(),
                               "command": "python -m benchmarks.inference --only-pipeline"}
        with write_atomic(args.out / "inference.json", "w") as fh:
            fh.write(json.dumps(results, indent=2) + "\n")
    else:
        results = measure(args.reps)
        with write_atomic(args.out / "inference.json", "w") as fh:
            fh.write(json.dumps(results, indent=2) + "\n")
    with write_atomic(args.out / "inference.md", "w") as fh:
        fh.write(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
