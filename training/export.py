"""Export a checkpoint to a Hub-ready model folder for the SDK.

Usage::

    python -m training.export runs/yeast-loc/best.pt --out zoo/yeast-loc --name yeast-loc \\
        --eval-data data/yeast-test/manifest.csv [--push my-lab/yeast-loc --revision v1.0.0 --private]

Writes ``model.onnx`` (one self-contained file, opset 18, dynamic batch, height and width;
outputs ``probabilities`` (B, K) and ``class_maps`` (B, K, h, w)), ``config.json``,
``README.md`` (a model card with Hugging Face metadata), ``sample_input.tif`` and
``sample_output.json``. Before anything is written, PyTorch and onnxruntime must agree
within 1e-4 on two random input sizes; otherwise the export fails and ``--out`` is left as
it was. The folder is assembled beside ``--out`` and renamed into place at the end.

With ``--push ORG/NAME`` the folder is then uploaded to the Hugging Face Hub (the repo is
created if needed), tagged with ``--revision``, and the commit sha printed. The token comes
from the usual places (``HF_TOKEN``, ``hf auth login``); it is looked up, and the tag checked
to be new, before the export starts.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch

from milcnn import constants
from milcnn.model.checksums import sha256_of
from milcnn.model.config import ModelInfo, read_config, scale_fields, write_config
from milcnn.errors import HubTokenError
from milcnn.io.images import write_tiff
from .checkpoint import read_checkpoint
from .data.manifest import load_image, read_manifest
from .model import MILCNN, receptive_field
from .options import prog

__all__ = ["export_onnx", "check_onnx", "export_folder", "export_pooling", "push_to_hub",
           "check_push", "ExportError"]

OPSET = 18
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


def export_onnx(model: MILCNN, path: Path) -> None:
    """Write ``model`` as one self-contained ONNX file with dynamic batch, height and width."""
    model = model.eval()
    x = torch.zeros(1, len(model.config.channels), 128, 160)
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=model.config.min_size, max=1 << 16)
    width = torch.export.Dim("width", min=model.config.min_size, max=1 << 16)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=OPSET, input_names=["image"],
            output_names=["probabilities", "class_maps"], external_data=False,
            dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
        )
    program.save(str(path), external_data=False)
    if any(p.name != path.name for p in path.parent.glob(path.name + "*")):
        raise ExportError(f"torch.onnx wrote external data beside {path}; the zoo needs one self-contained file")


def check_onnx(model: MILCNN, path: Path, *, sizes=((1, 96, 136), (2, 203, 157)), seed: int = 0) -> float:
    """Max abs difference between PyTorch and onnxruntime outputs on random inputs; raises above 1e-4."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b, h, w in sizes:
        x = torch.rand(b, len(model.config.channels), h, w, generator=gen) * 2
        with torch.no_grad():
            ref = model(x)
        probs, maps = session.run(["probabilities", "class_maps"], {"image": x.numpy()})
        diff = max(float(np.abs(probs - ref.probabilities.numpy()).max()),
                   float(np.abs(maps - ref.class_maps.numpy()).max()))
        worst = max(worst, diff)
        if diff > TOLERANCE:
            raise ExportError(f"onnxruntime differs from PyTorch by {diff:.2e} (> {TOLERANCE:.0e}) on a {b}x{h}x{w} input")
    return worst


def export_folder(checkpoint, out, *, name: str, version: str, eval_data: str | None = None,
                  sample_index: int = 0, training_data: dict | None = None, summary: str = "",
                  repo_id: str | None = None, pixel_size: float | None = None,
                  cell_diameter: float | None = None, input_cell_diameter: float | None = None,
                  input_cell_diameter_from: str | None = None) -> Path:
    """Write the whole model folder to ``out`` (replacing it only when everything succeeded).

    ``pixel_size``, ``cell_diameter`` and ``input_cell_diameter`` override the scale the checkpoint
    records (its ``--pixel-size`` / ``--cell-diameter`` at training; a fine-tuned model's source's);
    ``input_cell_diameter_from`` says where the last comes from (for the card). With an input cell
    diameter, ``sample_input.tif`` is the test image resized to that scale, as users' images come."""
    from milcnn.predict.classifier import Classifier
    from .evaluate import evaluate
    from .model_card import render_card
    from .checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint)
    cfg = model.config
    if training_data is None and "finetune_config" in ckpt:  # say which images a fine-tuned model saw
        training_data = finetuned_training_data(ckpt["finetune_config"])
    last = Path(checkpoint).with_name("last.pt")  # best.pt's history stops at the best epoch
    history = read_checkpoint(last)["history"] if last.is_file() else ckpt["history"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o777 & ~_umask())
    try:
        export_onnx(model, staging / constants.MODEL_FILE)
        max_diff = check_onnx(model, staging / constants.MODEL_FILE)
        metrics = {}
        if eval_data:
            with tempfile.TemporaryDirectory() as tmp:
                metrics = evaluate(model, eval_data, tmp)
        pooling = {"name": cfg.pooling, "params": cfg.pooling_params}
        if cfg.pooling == "noisy_and":
            pooling["learned_b"] = [round(float(v), 5) for v in model.pooling.b.detach()]
        onnx_file = staging / constants.MODEL_FILE
        pooling_file = export_pooling(onnx_file, staging / constants.POOLING_FILE) if cfg.pooling != "attention" else None
        scale = scale_block(pixel_size or cfg.pixel_size, cell_diameter or cfg.cell_diameter, eval_data, cfg.channels,
                            cfg.classes, cfg.normalization,
                            input_cell_diameter=input_cell_diameter or cfg.input_cell_diameter,
                            input_cell_diameter_from=input_cell_diameter_from)
        info = ModelInfo(
            name=name, version=version, summary=summary or "", repo_id=repo_id, classes=tuple(cfg.classes),
            channels=tuple(cfg.channels), normalization=cfg.normalization, output_stride=cfg.output_stride,
            min_size=cfg.min_size, multi_label=cfg.multi_label, pooling=pooling,
            architecture={"width": cfg.width, "context": cfg.context, "receptive_field": receptive_field(cfg),
                          "parameters": sum(p.numel() for p in model.parameters())},
            training=_training_record(ckpt, history), training_data=training_data or {},
            metrics=_card_metrics(metrics, eval_data),
            export={"opset": OPSET, "max_abs_difference_vs_pytorch": max_diff, "torch": torch.__version__},
            **scale_fields(scale),
        ).with_files(onnx_file, pooling_file)
        config = write_config(staging, info)
        if eval_data:
            samples, _, _ = read_manifest(eval_data, channels=cfg.channels, classes=cfg.classes)
            sample = load_image(samples[sample_index], len(cfg.channels))
            scale = config["scale"]
            if scale["input_cell_diameter_px"] and scale["cell_diameter_px"]:  # the sample at the input scale
                from milcnn.process.scale import resize_chw, zoomed_shape

                zoom = scale["input_cell_diameter_px"] / scale["cell_diameter_px"]
                resized = resize_chw(sample.astype(np.float32), zoomed_shape(sample.shape[1:], zoom))
                sample = np.clip(np.rint(resized), 0, np.iinfo(sample.dtype).max if sample.dtype.kind in "ui"
                                 else None).astype(sample.dtype)
            write_tiff(staging / constants.SAMPLE_INPUT_FILE, sample)
            prediction = Classifier.from_dir(staging, device="cpu").predict(staging / constants.SAMPLE_INPUT_FILE)
            sample_out = prediction.to_dict()
            sample_out["image"] = constants.SAMPLE_INPUT_FILE
            sample_out["true_label"] = "|".join(samples[sample_index].labels)
            (staging / constants.SAMPLE_OUTPUT_FILE).write_text(json.dumps(sample_out, indent=2) + "\n")
        (staging / constants.CARD_FILE).write_text(render_card(config))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_pooling(model_onnx: Path, out: Path) -> Path:
    """Cut the pooling layer (``class_maps`` -> ``probabilities``) out of an exported model.

    The SDK runs it on class maps stitched from tiles, so a tiled image is pooled by the
    very operators (and learned parameters) of the whole-image graph. Attention pooling
    also reads the features, so it has no such graph and such models are not tiled.
    """
    import onnx
    from onnx.utils import extract_model

    with tempfile.TemporaryDirectory() as tmp:
        extract_model(str(model_onnx), str(Path(tmp) / "pooling.onnx"), ["class_maps"], ["probabilities"])
        graph = onnx.load(str(Path(tmp) / "pooling.onnx"))
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _card_metrics(metrics: dict, eval_data: str | None) -> dict:
    if not metrics:
        return {}
    seg = metrics.get("segmentation", {})
    return {
        "test_set": eval_data, "n_images": metrics["n_images"], "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4), "mean_iou": _round(seg.get("mean_iou")),
        "otsu_mean_iou": _round(seg.get("otsu_mean_iou")),
        "per_class_f1": {c: round(m["f1"], 4) for c, m in metrics["per_class"].items()},
        "per_class_iou": {c: _round(v) for c, v in seg.get("per_class_iou", {}).items()},
        **({"n_treatments": metrics["treatments"]["n_treatments"],
            "treatment_accuracy": round(metrics["treatments"]["treatment_accuracy"], 4)}
           if "treatments" in metrics else {}),
    }


def _training_record(ckpt: dict, history: list[dict]) -> dict:
    """``config.json``'s ``training``: the run's settings and cost; for a fine-tuned checkpoint also
    its fine-tuning settings and, where the source was a training checkpoint, that run's cost."""
    record = {"train_config": ckpt["train_config"], "best_epoch": ckpt["best"]["epoch"], "epochs_run": len(history),
              "wall_seconds": round(sum(h["seconds"] for h in history), 1), "threads": torch.get_num_threads()}
    fc = ckpt.get("finetune_config")
    if fc:
        record["finetune_config"] = fc
        source_last = Path(fc["source"]).with_name("last.pt")
        if Path(fc["source"]).suffix == ".pt" and source_last.is_file():
            source_history = read_checkpoint(source_last).get("history", [])
            record["source_training"] = {"epochs_run": len(source_history),
                                         "wall_seconds": round(sum(h["seconds"] for h in source_history), 1)}
    return record


def finetuned_training_data(fc: dict) -> dict:
    """The ``training_data`` record of a model fine-tuned with ``training/finetune.py``."""
    rehearsal = (f"{fc['rehearsal_data']}" if fc.get("rehearsal_data") else
                 f"{fc['rehearsal']} simulated images" if fc.get("rehearsal") else "none")
    return {"name": f"{fc['source']} fine-tuned on {fc['data']}", "simulated": False,
            "real_images": f"fine-tuned on the images of {fc['data']}",
            "description": f"Started from {fc['source']}; fine-tuned for {fc['steps']} steps on the images of "
                           f"`{fc['data']}`, rehearsing {rehearsal} ({fc['rehearsal_fraction']:.0%} of each batch)."}


def scale_block(pixel_size, cell_diameter, manifest, channels, classes, normalization, *,
                input_cell_diameter: float | None = None, input_cell_diameter_from: str | None = None,
                max_images: int = 256) -> dict:
    """``config.json``'s ``scale``: the training scale and the cell-size reading of ``manifest``'s images.

    ``measured_cell_diameter_px`` is the median of ``milcnn.process.scale.estimate_cell_diameter`` over
    up to ``max_images`` images: the yardstick the SDK compares users' images with.
    ``measured_tolerance`` is the factor around it that holds 98 % of those readings (at least
    ``milcnn.process.scale.SCALE_TOLERANCE``), so the model's own kind of image is not reported as off-scale.
    """
    from milcnn.process.scale import SCALE_TOLERANCE

    from milcnn.process.preprocess import normalize
    from milcnn.process.scale import estimate_cell_diameter

    measured = tolerance = None
    if manifest:
        samples, _, _ = read_manifest(manifest, channels=channels, classes=classes)
        readings = [estimate_cell_diameter(normalize(load_image(s, len(channels)), normalization))
                    for s in samples[:: max(1, len(samples) // max_images)][:max_images]]
        readings = np.array([r for r in readings if r is not None])
        if readings.size:
            measured = round(float(np.median(readings)), 2)
            spread = np.maximum(readings / measured, measured / readings)
            tolerance = round(max(SCALE_TOLERANCE, float(np.percentile(spread, 98))), 2)
    if input_cell_diameter_from and not input_cell_diameter:
        raise ValueError("--input-cell-diameter-from describes --input-cell-diameter; give that too")
    block = {"pixel_size_um": pixel_size, "cell_diameter_px": cell_diameter, "measured_cell_diameter_px": measured,
             "measured_tolerance": tolerance, "input_cell_diameter_px": input_cell_diameter}
    if input_cell_diameter_from:
        block["input_cell_diameter_from"] = input_cell_diameter_from
    return block


def _round(v):
    return None if v is None else round(float(v), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("export"), description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="best.pt to export; with --update-scale, an exported model folder")
    parser.add_argument("--update-scale", action="store_true",
                        help="only record --pixel-size, --cell-diameter, --input-cell-diameter and the cell-size "
                             "reading of --eval-data in the model folder CHECKPOINT's config.json and card")
    parser.add_argument("--set-version", metavar="VERSION",
                        help="only set the version of the model folder CHECKPOINT (a patch release of the same "
                             "weights, e.g. new variants) in its config.json and card; with --register, pin it")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--name", help="model name (default: the --out folder's name)")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--summary", default="")
    parser.add_argument("--eval-data", help="test manifest: metrics for the card and the self-test sample")
    parser.add_argument("--sample-index", type=int, default=0, help="row of --eval-data used as sample_input.tif")
    parser.add_argument("--training-data", type=json.loads, default=None,
                        help='JSON describing the training data, e.g. \'{"simulated": true, "command": "..."}\'')
    parser.add_argument("--pixel-size", type=float, help="um per pixel of the training images (default: the "
                        "checkpoint's --pixel-size)")
    parser.add_argument("--cell-diameter", type=float, help="their typical cell diameter in px (default: the "
                        "checkpoint's)")
    parser.add_argument("--input-cell-diameter", type=float,
                        help="the cell diameter in px assumed of images given without a scale (the screen the model "
                             "is for); the SDK then resizes them by --cell-diameter / this")
    parser.add_argument("--input-cell-diameter-from", metavar="TEXT",
                        help="where --input-cell-diameter comes from, for the card")
    parser.add_argument("--register", metavar="ORG/NAME@REVISION",
                        help="add the model to the zoo registry, pinned to this Hub repo and revision")
    parser.add_argument("--registry", type=Path, default=Path("zoo/registry.json"))
    parser.add_argument("--push", metavar="ORG/NAME", help="upload the folder to this Hugging Face Hub repo")
    parser.add_argument("--revision", metavar="TAG", help="with --push: tag the uploaded commit (e.g. v1.0.0)")
    parser.add_argument("--private", action="store_true", help="with --push: create the repo as private")
    args = parser.parse_args(argv)
    if args.update_scale:
        try:
            return _update_scale(args.checkpoint, args.pixel_size, args.cell_diameter, args.eval_data,
                                 input_cell_diameter=args.input_cell_diameter, source=args.input_cell_diameter_from)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.set_version:
        folder = Path(args.checkpoint)
        config = set_version(folder, args.set_version)
        if args.register:
            register(args.registry, name=config["name"], spec=args.register, folder=folder,
                     summary=args.summary or config.get("summary", ""))
        print(folder)
        return 0
    if args.out is None:
        parser.error("--out is required")
    if (args.revision or args.private) and not args.push:
        parser.error("--revision and --private go with --push")
    try:
        api = check_push(args.push, revision=args.revision) if args.push else None
        out = export_folder(args.checkpoint, args.out, name=args.name or args.out.name, version=args.version,
                            eval_data=args.eval_data, sample_index=args.sample_index,
                            training_data=args.training_data, summary=args.summary, repo_id=args.push,
                            pixel_size=args.pixel_size, cell_diameter=args.cell_diameter,
                            input_cell_diameter=args.input_cell_diameter,
                            input_cell_diameter_from=args.input_cell_diameter_from)
    except (ExportError, HubTokenError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.register:
        register(args.registry, name=args.name or args.out.name, spec=args.register, folder=out, summary=args.summary)
    print(out)
    if args.push:
        try:
            commit = push_to_hub(out, args.push, revision=args.revision, private=args.private, api=api)
        except Exception as exc:  # network, permissions: the exported folder is complete and kept
            print(f"error: pushing {out} to {args.push} failed: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                  f"the folder is complete: upload it later with `hf upload {args.push} {out}`", file=sys.stderr)
            return 1
        at = f" (tag {args.revision})" if args.revision else ""
        print(f"pushed {out} to {args.push} at commit {commit}{at}")
    return 0


def _update_scale(folder, pixel_size, cell_diameter, eval_data, *, input_cell_diameter=None, source=None) -> int:
    from milcnn.model.config import ModelInfo
    from .model_card import update_folder

    info = ModelInfo.from_file(Path(folder) / constants.CONFIG_FILE)
    block = scale_block(pixel_size or info.pixel_size, cell_diameter or info.cell_diameter, eval_data,
                        info.channels, info.classes, info.normalization,
                        input_cell_diameter=input_cell_diameter or info.input_cell_diameter,
                        input_cell_diameter_from=source)
    if block["input_cell_diameter_px"] != info.input_cell_diameter and (Path(folder) / constants.SAMPLE_INPUT_FILE).is_file():
        raise ValueError(f"{folder}: its sample_input.tif is drawn at the input scale; export again with "
                         "--input-cell-diameter to change it")
    if not source and input_cell_diameter is None and info.input_cell_diameter_from:
        block["input_cell_diameter_from"] = info.input_cell_diameter_from
    update_folder(folder, scale=block)
    print(json.dumps(block))
    return 0


def _hub_api(token: str):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def check_push(repo_id: str, *, revision: str | None = None, api=None):
    """Fail fast, before any export work: a valid repo id, a token, and a tag not yet taken.

    Returns:
        The ``HfApi`` client to push with.

    Raises:
        ValueError: ``repo_id`` is not ``org/name``.
        HubTokenError: no Hugging Face token is configured.
        ExportError: the tag already exists in the repo.
    """
    from huggingface_hub import get_token
    from huggingface_hub import errors as hf_errors
    from milcnn.model.hub import is_repo_id

    if not is_repo_id(repo_id):
        raise ValueError(f"--push {repo_id!r}: expected a Hub repo id 'org/name'")
    if api is None:
        token = get_token()
        if token is None:
            raise HubTokenError(f"--push {repo_id}: no Hugging Face token found; log in with `hf auth login` "
                                "or set HF_TOKEN (nothing was exported)")
        api = _hub_api(token)
    if revision:
        try:
            tags = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="model").tags}
        except hf_errors.RepositoryNotFoundError:
            tags = set()  # a new repo: created at push time
        if revision in tags:
            raise ExportError(f"--revision {revision!r}: tag already exists in {repo_id}; releases are immutable, "
                              "choose a new tag (nothing was exported)")
    return api


def push_to_hub(folder, repo_id: str, *, revision: str | None = None, private: bool = False, api=None) -> str:
    """Upload an exported folder to ``repo_id`` (created if needed), tag it, return the commit sha.

    Args:
        folder: a folder written by ``export_folder``.
        repo_id: ``org/name`` on the Hub (``HF_ENDPOINT`` decides which Hub).
        revision: a tag for the new commit, e.g. ``v1.0.0``.
        private: create the repo as private (an existing repo keeps its visibility).
        api: an ``HfApi`` (default: one from ``check_push``).
    """
    folder = Path(folder)
    api = api if api is not None else check_push(repo_id, revision=revision)
    config = read_config(folder)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                             commit_message=f"{config['name']} v{config['version']}")
    commit = info.oid
    if revision:
        api.create_tag(repo_id, tag=revision, revision=commit, repo_type="model",
                       tag_message=f"{config['name']} v{config['version']}")
    return commit


def set_version(folder: Path, version: str) -> dict:
    """Give an exported model folder a new version (same weights: a patch release) in config.json and its card."""
    from milcnn.io.images import write_atomic
    from .model_card import render_card

    config = read_config(folder)
    config["version"] = version
    config = write_config(folder, config)
    with write_atomic(folder / constants.CARD_FILE, "w") as fh:
        fh.write(render_card(config))
    return config


def register(registry: Path, *, name: str, spec: str, folder: Path, summary: str) -> None:
    """Pin ``name`` in the zoo registry to ``org/name@revision`` and the sha256 of its model.onnx and
    config.json."""
    from milcnn.model.registry import ZooEntry, read_registry, write_registry

    repo_id, _, revision = spec.partition("@")
    entries = read_registry(registry)
    entries[name] = ZooEntry(name=name, repo_id=repo_id, revision=revision or "main",
                             sha256=sha256_of(folder / constants.MODEL_FILE), summary=summary,
                             config_sha256=sha256_of(folder / constants.CONFIG_FILE))
    write_registry(registry, entries)


if __name__ == "__main__":
    sys.exit(main())
