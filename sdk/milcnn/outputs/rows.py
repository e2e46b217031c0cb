"""``predictions.csv``: one row per image. ``header`` and ``prediction_row`` are its one writer's format,
``read_rows`` its one reader, ``row_counts`` what ``run.json`` counts of it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from milcnn.outputs.layout import RunLayout
from milcnn.process.decision import UNASSIGNED, decide

__all__ = ["header", "prediction_row", "read_rows", "row_counts"]


def prediction_row(image: str, pred, classes, *, threshold: float, argmax: bool = False, multi_label: bool = False,
                   location=None) -> list:
    """A ``predictions.csv`` row (``header``): image, plate, well, field, label, [labels,] qc, scale_source,
    n_cells (empty where the model does not count cells), max_probability, p_<class>..., area_<class>... (the fraction of the image each class's mask covers).
    The label is ``milcnn.process.decision.decide``'s: the top class where its probability reaches ``threshold``
    (or any, with ``argmax``) and qc is ``ok``, else ``unassigned``; multi-label models also list every
    class at or above ``threshold`` (``labels``)."""
    probs = [pred.probabilities[c] for c in classes]
    call = decide(probs, classes, threshold=threshold, multi_label=multi_label, qc=pred.qc, argmax=argmax)
    counts = pred.areas  # a Prediction's, or a Dask worker's FieldResult's (computed where the mask is)
    where = [location.plate, location.well, location.field] if location is not None else ["", "", ""]
    n_cells = getattr(pred, "n_cells", None)
    return [image, *where, call.label, *([call.labels] if multi_label else []), pred.qc,
            pred.scale_source, "" if n_cells is None else str(n_cells), f"{call.probability:.6f}",
            *[f"{p:.6f}" for p in probs], *[f"{a:.6f}" for a in counts]]


def header(classes, multi_label: bool = False) -> list[str]:
    return ["image", "plate", "well", "field", "label", *(["labels"] if multi_label else []), "qc", "scale_source",
            "n_cells", "max_probability", *[f"p_{c}" for c in classes], *[f"area_{c}" for c in classes]]


def read_rows(out: Path) -> list[dict]:
    """The finished ``predictions.csv`` of ``out`` (a run's rows and any resumed ones) as dicts."""
    import csv

    with open(RunLayout(out).predictions, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def row_counts(rows: list[dict]) -> dict:
    """How many rows are ``unassigned``, and have each qc and scale source (for ``run.json``)."""
    return {"unassigned": sum(row["label"] == UNASSIGNED for row in rows),
            "qc": dict(sorted(Counter(row["qc"] for row in rows).items())),
            "scale_source": dict(sorted(Counter(row["scale_source"] for row in rows).items()))}
