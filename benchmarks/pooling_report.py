"""``benchmarks/results/pooling.md``: rendered from ``pooling.json`` (the pooling rows of
``benchmarks.pooling`` and the classical pipeline's of ``benchmarks.baseline_pipeline``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from milcnn.io.images import write_atomic

__all__ = ["write_report", "render_markdown", "render_dataset", "render_baseline", "RESULTS"]

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DATASETS = ("yeast", "mcf7")  # sections of pooling.md, in this order
LEVELS = ("0.0", "0.25", "0.5")  # fractions of cells not showing the pattern in the test sets


def write_report(report: dict, results_dir: Path = RESULTS) -> None:
    """Write pooling.json and re-render pooling.md from it, keeping the hand-written discussion."""
    results_dir.mkdir(parents=True, exist_ok=True)
    with write_atomic(results_dir / "pooling.json", "w") as fh:
        fh.write(json.dumps(report, indent=2) + "\n")
    md_path = results_dir / "pooling.md"
    kept = md_path.read_text().partition("\n## Discussion")[1:] if md_path.is_file() else ("", "")
    with write_atomic(md_path, "w") as fh:
        fh.write(render_markdown(report) + "".join(kept))


def render_markdown(report: dict) -> str:
    lines = ["# MIL pooling comparison on the simulators", ""]
    for name in DATASETS:
        if name in report:
            lines += render_dataset(report[name])
            if name in report.get("baseline_pipeline", {}):
                lines += render_baseline(name, report["baseline_pipeline"][name], report[name])
    return "\n".join(lines)


def render_dataset(section: dict) -> list[str]:
    b, data = section["budget"], section["data"]
    lo, hi = (round(100 * v) for v in data["train"]["non_showing"])
    treatments = any("treatment_accuracy" in lv for row in section["results"].values() for lv in row["levels"].values())
    lines = [
        f"## {section['title'][0].upper() + section['title'][1:]}",
        "",
        f"Made by `{section['command'].strip()}` ({section['machine']['threads']} CPU threads, "
        f"torch {section['machine']['torch']}). Every pooling trains the same CNN "
        f"(width {b['width']}, output stride {b['output_stride']}, context {b['context']}, edge-aware smoothness "
        f"weight {b['smoothness']} unless the row says otherwise; channels {section['channels']}) on the same "
        f"{data['train']['n']} simulated images (seed {data['train']['seed']}, {lo}-{hi} % of "
        f"cells not showing the pattern) for the same budget: {b['epochs']} epochs x {b['steps_per_epoch']} "
        f"steps of {b['batch_size']} crops of {b['crop']} px, learning rate {b['lr']}, seed 0; the checkpoint "
        f"with the best validation accuracy ({data['val']['n']} images, seed {data['val']['seed']}) is kept. "
        "Test sets are simulated from other seeds "
        f"({data['test']['0.0']['n']} images each) with 0 %, 25 % and 50 % of cells showing no "
        "pattern. IoU: pixels the model assigns to the image's class (class map largest and >= 0.5) against "
        "the pixels of cells showing it, pooled per class, averaged over classes.",
    ]
    if treatments:
        lines += ["", "Treatment accuracy: the class of the mean image probability of each (compound, "
                      "concentration) in a test set, against its MOA (`training/treatments.py`)."]
    for name, ref in section.get("references", {}).items():
        lines += ["", f"`{ref['command'].strip()}` adds {name} as released ({ref['checkpoint']}: Noisy-AND a = 10, "
                      f"{ref['epochs']} epochs on its own simulated training set) on the same test sets, to separate "
                      "the pooling from the short budget of the rows above."]
    head = "| pooling | acc 0 % | acc 25 % | acc 50 % |" + (" treat. 0 % | treat. 25 % | treat. 50 % |" if treatments else "")
    lines += ["", head + " IoU 0 % | IoU 25 % | IoU 50 % | train s |",
              "|---" * (head.count("|") + 3) + "|"]
    otsu = None
    keys = ("0.0", "0.25", "0.5")
    rows = dict(section["results"])
    for name, ref in section.get("references", {}).items():
        rows[f"{name}: released model ({ref['epochs']} epochs, its own training set; reference)"] = ref
    for label, row in rows.items():
        lv = row["levels"]
        cells = [f"{lv[k]['accuracy'] * 100:.1f}" for k in keys]
        if treatments:
            cells += [f"{lv[k]['treatment_accuracy'] * 100:.1f}" for k in keys]
        cells += [f"{lv[k]['mean_iou']:.3f}" for k in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {row['train_seconds']:.0f} |")
        otsu = [f"{lv[k]['otsu_mean_iou']:.3f}" for k in keys]
    if otsu:
        cells = [f"Otsu on the {section['marker']} channel (baseline)"] + [""] * (6 if treatments else 3) + otsu + [""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_baseline(name: str, base: dict, section: dict) -> list[str]:
    """The baseline's section of pooling.md: its rows beside the default MIL-CNN's (the benchmark's
    Noisy-AND a = 10 row, and any released reference model), and what they show."""
    lv = base["levels"]
    cnn = section["results"].get("noisy_and (a=10)", {}).get("levels", {})
    treatments = all("treatment_accuracy" in lv[l] for l in LEVELS)
    seconds = np.mean([lv[l]["predict_seconds_per_image"] for l in LEVELS])
    lines = [
        f"### Baseline: the classical pipeline ({name})",
        "",
        f"`{base['command'].strip()}` (see its docstring): cells segmented from {base['segmented_from']}; "
        f"{base['n_features']} intensity, texture, radial-distribution and shape features per cell; a random forest "
        f"on {base['train_cells']:,} training cells that inherit their image's label, aggregated per image"
        + (" and per treatment" if treatments else "") + ". Same train and test images as the rows above. "
        f"Training (segmentation, features, forest): {base['train_seconds']:.0f} s.",
        "",
        "| method | acc 0 % | acc 25 % | acc 50 % |" + (" treat. 0 % | treat. 25 % | treat. 50 % |" if treatments else "")
        + " IoU 0 % | IoU 25 % | IoU 50 % | s / test image |",
        "|---" * (11 if treatments else 8) + "|",
    ]
    for label, key in (("pipeline, mean cell probability", "accuracy_mean_probability"),
                       ("pipeline, majority vote", "accuracy_majority_vote")):
        cells = [label] + [f"{100 * lv[l][key]:.1f}" for l in LEVELS]
        if treatments:  # treatments aggregate the mean cell probability of their images
            cells += [f"{100 * lv[l]['treatment_accuracy']:.1f}" if key == "accuracy_mean_probability" else ""
                      for l in LEVELS]
        cells += [f"{lv[l]['mean_iou']:.3f}" for l in LEVELS] + [f"{seconds:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    models = {"MIL-CNN Noisy-AND a=10 (row above)": cnn} if cnn else {}
    for ref_name, ref in section.get("references", {}).items():
        models[f"{ref_name} as released ({ref['epochs']} epochs; reference row above)"] = ref["levels"]
    for label, levels in models.items():
        cells = [label] + [f"{100 * levels[l]['accuracy']:.1f}" for l in LEVELS]
        if treatments:
            cells += [f"{100 * levels[l]['treatment_accuracy']:.1f}" if "treatment_accuracy" in levels[l] else ""
                      for l in LEVELS]
        cells += [f"{levels[l]['mean_iou']:.3f}" for l in LEVELS] + [""]
        lines.append("| " + " | ".join(cells) + " |")
    best = {l: max(lv[l]["accuracy_mean_probability"], lv[l]["accuracy_majority_vote"]) for l in LEVELS}
    pct = lambda ls: ", ".join(f"{float(l):.0%}" for l in ls)  # noqa: E731
    verdicts = []
    for label, levels in models.items():
        wins = [l for l in LEVELS if levels[l]["accuracy"] > best[l]]
        ties = [l for l in LEVELS if levels[l]["accuracy"] == best[l]]
        below = [l for l in LEVELS if l not in wins + ties]
        seg = [l for l in LEVELS if levels[l]["mean_iou"] > lv[l]["mean_iou"]]
        verdicts.append(f"{label.split(' (')[0]}: image accuracy above the pipeline's better aggregation at "
                        f"{len(wins)} of 3 heterogeneity levels" + (f", tied at {pct(ties)}" if ties else "")
                        + (f", **below at {pct(below)}**" if below else "")
                        + f"; segmentation IoU above the pipeline at {len(seg)} of 3.")
    if verdicts:
        lines += ["", "Measured: " + " ".join(verdicts)
                  + f" Majority vote at 50 % non-showing cells: {100 * lv['0.5']['accuracy_majority_vote']:.1f} % "
                  f"(mean probability {100 * lv['0.5']['accuracy_mean_probability']:.1f} %). The pipeline takes "
                  f"{seconds:.2f} s per test image (segmentation and per-cell measurement, 2 processes). Why: see "
                  "the discussion below."]
    return lines + [""]
