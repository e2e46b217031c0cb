"""Render a model card (``README.md`` with Hugging Face YAML metadata) from a model's config.json.

Every figure in the card is read from the config, which ``training/export.py`` fills from
the evaluation it runs; nothing here is typed by hand.
"""

from __future__ import annotations

import json

__all__ = ["render_card"]


def _yaml_metrics(metrics: dict) -> list[str]:
    rows = [("accuracy", "accuracy", "Image accuracy"), ("f1", "macro_f1", "Macro F1"),
            ("mean_iou", "mean_iou", "Segmentation mean IoU")]
    out = []
    for kind, key, label in rows:
        if metrics.get(key) is not None:
            out += [f"      - type: {kind}", f"        value: {metrics[key]}", f"        name: {label}"]
    return out


def render_card(config: "dict | ModelInfo") -> str:
    """The card of a model folder's config (a ``ModelInfo``, or its dict as ``write_config`` returns it)."""
    from milcnn.model.config import ModelInfo

    info = config if isinstance(config, ModelInfo) else ModelInfo.from_dict(config)
    name, metrics, data = info.name, info.metrics, info.training_data
    simulated = bool(data.get("simulated"))
    dataset_name = data.get("name", "simulated yeast GFP screen" if simulated else "user data")
    lines = [
        "---",
        "license: mit",
        "library_name: milcnn",
        "tags:",
        *[f"- {t}" for t in ("microscopy", "high-content-screening", "multiple-instance-learning", "onnx",
                             "image-segmentation", *data.get("tags", []))],
        "pipeline_tag: image-classification",
        "model-index:",
        f"- name: {name}",
        "  results:",
        "  - task:",
        "      type: image-classification",
        "    dataset:",
        f"      name: {json.dumps(dataset_name)}",
        f"      type: {'simulated' if simulated else 'custom'}",
        "    metrics:",
        *_yaml_metrics(metrics),
        "---",
        "",
        f"# {name} v{info.version}",
        "",
        info.summary or "A MIL-CNN (Kraus, Ba & Frey, Bioinformatics 2016) for high-content screening images.",
        "",
        "It classifies a whole field of view and, from the same per-class probability maps, marks where each "
        "class is, having been trained with image-level labels only.",
        "",
        "## Input and output",
        "",
        f"- Channels, in this order: {', '.join(f'`{c}`' for c in info.channels)}. Any height and width "
        f">= {info.min_size} px (smaller images are padded).",
        f"- Pre-processing (done by the SDK): per-image, per-channel percentile normalisation "
        f"({info.normalization.low} to {info.normalization.high} percentile).",
        f"- Classes: {', '.join(f'`{c}`' for c in info.classes)}"
        + (" (multi-label)." if info.multi_label else " (one per image)."),
        f"- Outputs: image probabilities per class, and class maps at 1/{info.output_stride} resolution "
        "that the SDK upsamples to the input and turns into a label mask.",
        f"- Pooling: {info.pooling['name']} {json.dumps(info.pooling.get('params', {}))}; "
        f"{info.architecture['parameters']:,} parameters.",
        *_scale_lines(info.scale_dict()),
        "",
        "## Use",
        "",
        "```python",
        "from milcnn import Classifier",
        f'clf = Classifier.from_hub("{info.repo_id or name}")',
        'pred = clf.predict("image.tif")  # C x H x W or H x W x C TIFF, channels in the order above',
        "print(pred.label, pred.qc, pred.probabilities)  # label: 'unassigned' below 0.5 or when qc is not 'ok'",
        "```",
        "",
        f"or `milzoo predict images/*.tif --model {info.repo_id or name} --out results/`.",
        "",
        *([f"`model.onnx` sha256: `{info.file_sha256('model.onnx')}` (checked by the SDK on every load).",
           ""] if info.file_sha256("model.onnx") else []),
        "## Intended use",
        "",
        data.get("intended_use", "Research use in high-content screening: triage and phenotype maps. "
                 "Not for diagnostic use."),
        "",
        "## Training data",
        "",
    ]
    if simulated:
        lines += ["**The training data is simulated**, not real microscopy. " + data.get("description", ""), ""]
    else:
        lines += [data.get("description", "Not described."), ""]
    t = info.training
    tc = t.get("train_config", {})

    def trained(epochs: int, seconds: float) -> str:
        return (f"for {epochs} epochs of {tc.get('steps_per_epoch')} steps ({tc.get('batch_size')} crops of "
                f"{tc.get('crop')} px) in {seconds / 60:.1f} min")

    if t.get("finetune_config"):
        fc, source = t["finetune_config"], t.get("source_training")
        chosen = "the checkpoint of best validation accuracy was" if fc.get("val") else "the last step's weights were"
        lines += [f"Fine-tuned from `{fc['source']}` for {fc['steps']} steps ({fc['batch_size']} crops of "
                  f"{fc['crop']} px) in {t['wall_seconds'] / 60:.1f} min on {t['threads']} CPU threads; {chosen} "
                  "exported." + (f" The model it started from was trained {trained(source['epochs_run'], source['wall_seconds'])}."
                                 if source else ""), ""]
    elif t.get("wall_seconds"):
        lines += [f"Trained {trained(t['epochs_run'], t['wall_seconds'])} on {t['threads']} CPU threads; the checkpoint "
                  f"of epoch {t['best_epoch']} (best validation accuracy) was exported.", ""]
    if metrics:
        lines += [
            "## Evaluation",
            "",
            f"Measured by `training/export.py` on `{metrics.get('test_set')}` ({metrics.get('n_images')} images"
            + (", simulated from seeds not used in training" if simulated else "") + "):",
            "",
            "| metric | value |",
            "|---|---|",
            f"| image accuracy | {metrics['accuracy']:.4f} |",
            f"| macro F1 | {metrics['macro_f1']:.4f} |",
        ]
        if metrics.get("treatment_accuracy") is not None:
            lines.append(f"| treatment accuracy ({metrics['n_treatments']} treatments: compound and concentration; "
                         f"the class of their images' mean probability) | {metrics['treatment_accuracy']:.4f} |")
        if metrics.get("mean_iou") is not None:
            lines += [f"| segmentation mean IoU (mask vs cells showing the class) | {metrics['mean_iou']:.4f} |",
                      f"| Otsu threshold of the marker channel, same IoU (baseline) | {metrics['otsu_mean_iou']:.4f} |"]
        lines += ["", "| class | F1 | IoU |", "|---|---|---|"]
        for c in info.classes:
            iou = metrics.get("per_class_iou", {}).get(c)
            lines.append(f"| {c} | {metrics['per_class_f1'].get(c, 0):.4f} | {'' if iou is None else f'{iou:.4f}'} |")
        lines.append("")
    lines += _trust_lines(info)
    lines += _real_image_lines(info.real_images)
    for precision, variant in info.variants.items():
        vm = variant.metrics
        rows = vm.get("by_backend") or {vm.get("backend", "onnxruntime"): vm}
        lines += [
            f"## {precision} variant",
            "",
            f"`{variant.file}` ({variant.method}{_calibration_text(variant)}), loaded with "
            f"`Classifier.from_hub(..., precision=\"{precision}\")` "
            f"or `milzoo predict --precision {precision}`. Measured by "
            f"`python -m training.quantize --precision {precision}` through the SDK on "
            f"`{vm['test_set']}` ({vm['n_images']} images):",
            "",
            "| precision | backend | image accuracy | segmentation mean IoU | masks vs fp32 (IoU) |",
            "|---|---|---|---|---|",
            f"| fp32 | onnxruntime | {vm['fp32_accuracy_sdk']:.4f} | {vm['fp32_mean_iou_sdk']:.4f} | 1 |",
            *(f"| {precision} | {backend} | {m['accuracy']:.4f} | {m['mean_iou']:.4f} | "
              f"{m['mask_iou_vs_fp32']:.4f} |" if "mask_iou_vs_fp32" in m else
              f"| {precision} | {backend} | {m['accuracy']:.4f} | {m['mean_iou']:.4f} | not measured |"
              for backend, m in rows.items()),
            "",
            "For GPUs: `--device cuda` (or `device=\"cuda\"`) loads it by itself (`--precision auto`). No GPU has "
            "run it in this project yet; on a CPU, `auto` keeps fp32." if precision == "fp16"
            else "Speed on this project's CPU: see BENCHMARKS.md (`python -m benchmarks.peers`).",
            "",
        ]
    lines += [
        "## Limitations",
        "",
        *[f"- {item}" for item in data.get("limitations", [])],
        "- The mask marks where the class map is high; it follows cells, not their exact outlines, "
        f"at the 1/{info.output_stride} resolution of the maps.",
        "- Images of other organisms, magnifications or stains than the training data are out of scope: "
        "retrain on your own screen (below).",
        "",
        "## Retrain",
        "",
        "```bash",
        *data.get("commands", ["python -m training.train --data manifest.csv --channels ... --out runs/my-model"]),
        "```",
        "",
    ]
    return "\n".join(lines)


def _scale_lines(scale: dict) -> list[str]:
    parts = [f"{scale['pixel_size_um']:g} um per pixel" if scale.get("pixel_size_um") else "",
             f"cells about {scale['cell_diameter_px']:g} px across" if scale.get("cell_diameter_px") else ""]
    parts = [p for p in parts if p]
    if not parts:
        return []
    line = (f"- Scale: trained at {' and '.join(parts)}. Images at another scale: pass `pixel_size=` or "
            "`cell_diameter=` (`--pixel-size`, `--cell-diameter`) and the SDK resizes them to this scale; "
            "masks and maps come back at the input's size.")
    if scale.get("input_cell_diameter_px") and scale.get("cell_diameter_px"):
        source = f" (from {scale['input_cell_diameter_from']})" if scale.get("input_cell_diameter_from") else ""
        line += (f" Given no scale, an image is assumed to have cells about {scale['input_cell_diameter_px']:g} px "
                 f"across{source} and is resized by {scale['cell_diameter_px'] / scale['input_cell_diameter_px']:.2f}.")
    return [line]


def _trust_lines(info) -> list[str]:
    """The card's "Probabilities, unassigned and qc" section: the calibration and qc blocks, and what
    ``python -m benchmarks.calibration`` measured with them (``ModelInfo.trust``)."""
    cal = None if info.calibration is None else info.calibration.to_dict()
    qc = None if info.qc is None else info.qc.to_dict()
    trust = info.trust
    lines = ["## Probabilities, `unassigned` and qc", ""]
    if not cal:
        return lines + ["Not calibrated: probabilities are the network's raw outputs.", ""]
    fitted = cal.get("fitted_on", {})
    measured = ", ".join(f"{m} NLL {v['nll']:.3f} / ECE {v['ece']:.3f}"
                         for m, v in fitted.get("cross_validated", {}).items())
    sources = " and ".join(x for x in [", ".join(f"`{m}`" for m in fitted.get("simulated", [])), fitted.get("real")] if x)
    lines += [f"Probabilities are calibrated ({cal['method'].replace('_', ' ')}, Guo et al. 2017) on "
              f"{fitted.get('images', '?')} images the model was not trained on ({sources}); the method was chosen by "
              f"{fitted.get('chosen_by', 'measurement')} ({measured}; `none`: the raw outputs). `label` is the top "
              "class when its probability reaches 0.5 (`--threshold`) and `qc` is `ok`, else `unassigned`.", ""]
    if qc:
        similarity = (f", channel similarity {qc['channel_similarity'][0]:g} to {qc['channel_similarity'][1]:g}"
                      if qc.get("channel_similarity") else "")
        distance = (f", and a feature distance (Mahalanobis, to the nearest class) up to {qc['distance']['limit']:g}"
                    if qc.get("distance") else "")
        lines += [f"qc (`ok`, `too_small`, `no_cells`, `off_scale`, `out_of_distribution`) accepts what "
                  f"{qc.get('fitted_on', {}).get('images', '?')} reference images span, with margins: objects "
                  f"{qc['cell_diameter_px'][0]:g} to {qc['cell_diameter_px'][1]:g} px across at the network's scale"
                  + (f" (and within the range of the reference images of the same top class, for "
                     f"{len(qc['cell_diameter_px_by_class'])} classes)" if qc.get("cell_diameter_px_by_class") else "")
                  + ", "
                  f"texture from {qc['texture_min']:g}, coverage up to {qc['coverage_max']:g}{similarity}{distance} "
                  "(`python -m training.calibrate`).", ""]
    if trust:
        lines += ["![reliability diagram](reliability.png)", "",
                  f"Measured by `{trust['command']}` with the SDK's defaults (images not used to fit or choose "
                  "anything):", "", "| images | ECE | label accuracy (`unassigned` wrong) | `unassigned` among "
                  "ranked right | qc flagged |", "|---|---|---|---|---|"]
        for name, row in trust["sets"].items():
            lines.append(f"| {name} | {row['ece']:.3f} | {100 * row['label_accuracy']:.1f} % | "
                         f"{100 * row['unassigned_among_ranked_right']:.1f} % | {100 * row['qc_flagged']:.1f} % |")
        lines += ["", f"Junk (noise of four kinds, blank, constant, stripes, gradient, checkerboard, one bright blob, "
                      f"a 12 px crop, another model's cells): {trust['junk_labelled']} of {trust['junk_kinds']} kinds "
                      "given a label.", ""]
        for name, row in trust.get("not_made_for", {}).items():
            if row.get("unassigned_where_top_wrong") is not None:
                lines.append(f"- {name}: top class wrong on {row['top_class_wrong']} of {row['n']}, of which "
                             f"{100 * row['unassigned_where_top_wrong']:.0f} % `unassigned`.")
        others = trust.get("other_screens") or {}
        if others:
            called = {k: v for k, v in others.items() if v != "unassigned"}
            lines.append(f"- real images of other screens (`../shared/realdata`, none of this model's kind of cells): "
                         f"{len(called)} of {len(others)} given a label"
                         + (f" ({'; '.join(f'{k}: {v}' for k, v in called.items())})" if called else "") + ".")
        lines.append("")
    cells = info.cells
    if cells is not None:
        v = cells.validated
        lines += [f"`n_cells` (predictions.csv, wells.csv) counts {cells.objects} in `{cells.channel}`, about "
                  f"{cells.diameter:g} px across at the network's scale (`milcnn.process.cells`, classical blob "
                  f"detection). Against the simulator's count on {v.get('fields', '?')} fields it measured a median "
                  f"ratio of {v.get('median_ratio', float('nan')):.3f} (10-90 %: "
                  f"{' to '.join(f'{x:.2f}' for x in v.get('p10_p90_ratio', []))}), "
                  f"{v.get('ms_per_field', float('nan')):.2f} ms a 512 x 512 field (`python -m training.cells`).", ""]
    return lines


def _real_image_lines(real: dict | None) -> list[str]:
    """The card's "Real images" section, from ``ModelInfo.real_images`` (``benchmarks/realdata.py``)."""
    lines = ["## Real images", ""]
    if not real:
        return lines + ["Not measured on real images.", ""]
    lines += [f"Measured by `{real['command']}` on real labelled cells ({real['data']}): each field scored as "
              f"{real['k']} x {real['k']} mosaics of its own cells, cell by cell, and whole (all its cells in one "
              f"mosaic, one call per field). {real.get('note', '')}".rstrip(),
              "", "| real set | scale | protein / treatment | right when called | mosaics right | called most "
              "| cells right | whole fields right |", "|---|---|---|---|---|---|---|---|"]
    for set_name, modes in real["sets"].items():
        for mode, r in modes.items():
            for g, row in r["groups"].items():
                lines.append(f"| {set_name} | {mode} | {g} | {row['accepted']} | {row['mosaics']} | {row['called']} "
                             f"| {row['cells']} | {row.get('whole_fields', '-')} |")
            lines.append(f"| {set_name} | {mode} | **all** | | **{r['mosaics']}** | | **{r['cells']}** "
                         f"| **{r.get('whole_fields', '-')}** |")
            for half, h in r.get("halves", {}).items():
                lines.append(f"| {set_name} | {mode} | *{half} half* | | {h['mosaics']} | | {h['cells']} "
                             f"| {h.get('whole_fields', '-')} |")
    return lines + [""]


def _calibration_text(variant) -> str:
    calibration = variant.details.get("calibration")
    if calibration is None:
        return ""
    return f"; calibrated on {calibration['n_images']} images of `{calibration['manifest']}`"


def update_folder(folder, **changes) -> dict:
    """Set top-level keys of a model folder's ``config.json`` and re-render its card.

    For facts measured after export (the scale, real-image figures); ``model.onnx`` and its
    checksum are untouched. Both files are written to temporary names and renamed.

    Returns:
        the new config.
    """
    from pathlib import Path

    from milcnn.model.config import read_config, write_config
    from milcnn.io.images import write_atomic

    folder = Path(folder)
    config = write_config(folder, {**read_config(folder), **changes})
    with write_atomic(folder / "README.md", "w") as fh:
        fh.write(render_card(config))
    return config
