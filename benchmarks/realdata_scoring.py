"""Scoring a classifier on real labelled fields (cells, and mosaics of each field's own cells), shared
by ``benchmarks.realdata`` and its learning curve (``benchmarks.realdata_curve``)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from training.data.real import field_mosaic, mosaics

__all__ = ["score_units", "score_model", "pct"]


def score_units(units: list[tuple[str, str, tuple[str, ...]]], group_order: list[str]) -> dict:
    """Accuracy figures of predictions ``(group, predicted label, accepted labels)``.

    Returns:
        ``{"n", "correct", "accuracy", "balanced_accuracy", "groups": {group: {"n", "correct",
        "accuracy", "called": {label: count}}}}``; balanced accuracy is the mean over groups.
    """
    groups: dict[str, dict] = {}
    for name in group_order:
        rows = [(label, accepted) for g, label, accepted in units if g == name]
        if not rows:
            continue
        correct = sum(label in accepted for label, accepted in rows)
        called = Counter(label for label, _ in rows)
        groups[name] = {"n": len(rows), "correct": correct, "accuracy": round(correct / len(rows), 4),
                        "called": dict(called.most_common())}
    n = sum(g["n"] for g in groups.values())
    correct = sum(g["correct"] for g in groups.values())
    return {"n": n, "correct": correct, "accuracy": round(correct / n, 4) if n else None,
            "balanced_accuracy": round(float(np.mean([g["accuracy"] for g in groups.values()])), 4) if groups else None,
            "groups": groups}


def score_model(clf, fields, *, k: int = 4, cell_diameter: float | None = None, batch_size: int = 64) -> dict:
    """Predict every cell, every ``k x k`` mosaic and every whole field of ``fields`` with a
    ``milcnn.Classifier`` (a whole field: all its cells in one near-square mosaic, ``field_mosaic``,
    one prediction, as a screen's field is called).

    Args:
        clf: the classifier (its channels must be the fields' channels, in order).
        fields: ``training.data.real.Field`` list.
        k: mosaic side, in cells.
        cell_diameter: the fields' cell diameter in px, to resize them to the model's scale
            (None: as they are).

    Returns:
        ``{"cells": score_units(...), "mosaics": score_units(...), "whole_fields": score_units(...),
        "halves": {"validation" | "test": {"cells", "mosaics", "whole_fields"}}, "fields": [{"field",
        "group", "half", "n_mosaics", "mosaics_correct", "called": {...}, "whole_field": label,
        "whole_field_probability"}],
        "seconds"}``; the halves are the set's (``RealSet.half``).
    """
    t0 = time.perf_counter()
    order = [g.name for g in fields[0].set.groups] if fields else []
    cell_units, mosaic_units, field_units, per_field = [], [], [], []
    for f in fields:
        accepted, half = f.group.accepted, f.set.half(f)
        for pred in clf.predict_batch(list(f.cells), batch_size=batch_size, cell_diameter=cell_diameter):
            cell_units.append((f.group.name, pred.top, accepted, half))
        labels = [p.top for p in clf.predict_batch(mosaics(f.cells, k), cell_diameter=cell_diameter)]
        mosaic_units += [(f.group.name, label, accepted, half) for label in labels]
        whole = clf.predict(field_mosaic(f.cells), cell_diameter=cell_diameter)
        field_units.append((f.group.name, whole.top, accepted, half))
        per_field.append({"field": f.path.name, "group": f.group.name, "half": half, "n_cells": len(f.cells),
                          "n_mosaics": len(labels), "mosaics_correct": sum(lab in accepted for lab in labels),
                          "called": dict(Counter(labels).most_common()), "whole_field": whole.top,
                          "whole_field_probability": round(whole.probabilities[whole.top], 4)})
    halves = {h: {kind: score_units([u[:3] for u in units if u[3] == h], order)
                  for kind, units in (("cells", cell_units), ("mosaics", mosaic_units), ("whole_fields", field_units))}
              for h in ("validation", "test") if any(u[3] == h for u in mosaic_units)}
    return {"cells": score_units([u[:3] for u in cell_units], order),
            "mosaics": score_units([u[:3] for u in mosaic_units], order),
            "whole_fields": score_units([u[:3] for u in field_units], order), "halves": halves,
            "fields": per_field, "seconds": round(time.perf_counter() - t0, 1)}


def pct(x) -> str:
    """A fraction as a percentage with one decimal, ``-`` for None."""
    return "-" if x is None else f"{100 * x:.1f} %"
