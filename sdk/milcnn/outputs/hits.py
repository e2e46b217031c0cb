"""Hits: which sample wells differ from their plate's negative controls, how sure that is, and whether the
plate worked (``hits.csv``, ``plate_qc.csv``), from the well table (``milcnn.outputs.plates.well_table``) and a
plate map with a ``role`` column (``negative_control``, ``positive_control``, ``sample``, ``empty``).

The score of a well is the calibrated class probability it gained over its plate's negative controls, counted
only for classes whose masks also grew: ``sum_c max(0, p_c - m_c)`` over the classes c whose ``area_c`` (the
share of the field their mask covers) exceeds the controls' median by at least ``MIN_AREA``; ``p`` is the mean
``p_<class>`` of the well's fields that passed qc and ``m`` the controls' median profile. So 0 for a well that
looks like the controls, 1 for one called wholly another class with cells marked for it: the pooled probability
and MIL's instances must agree (an untreated field that Noisy-AND pools to 0.9 of a class with no cell marked
for it scores 0). The class that drives the call is the one that gained the most. The controls' own scores
(each against the others: leave one out) are the null: ``robust_z = (score - median) / max(1.4826 x MAD,
MIN_SPREAD)`` of them, the p-value is the normal upper tail of ``robust_z``, and q-values are Benjamini-Hochberg
over every scored sample well of the run. Z' and SSMD (and the robust Z', on medians and MADs) compare the
positive and negative controls on the same score. ``benchmarks/hits.py`` measures it; ``MIN_AREA`` and
``MIN_SPREAD`` were chosen there on a plate of their own (seed 40), not the reported one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from milcnn.process.quality import QC_OK

__all__ = ["ROLES", "HIT_Q", "MIN_NEGATIVE_CONTROLS", "HitCalling", "call_hits", "hits_header", "plate_qc_header"]

log = logging.getLogger(__name__)

ROLES = ("negative_control", "positive_control", "sample", "empty")
HIT_Q = 0.05  # a sample well is a hit at q <= HIT_Q
MIN_NEGATIVE_CONTROLS = 3  # fewer on a plate: no median and spread to score against
# the least spread of the controls' scores: untreated wells that the model calls alike to the last digit still
# differ from other untreated wells by this much (a share of probability)
MIN_SPREAD = 0.1
# the least growth of a class's mask (share of the field) over the controls' for its probability to count
# (benchmarks/hits.py, tuning plate: without it 3 of 60 inactive wells were called, with 0.005 none, and
# the positive controls' Z' rose from 0.08 to 0.73)
MIN_AREA = 0.005
_MAD = 1.4826  # MAD to standard deviation, for normal data


@dataclass
class HitCalling:
    """What ``call_hits`` found: ``hits.csv``'s rows, ``plate_qc.csv``'s rows, and the lines to tell the user
    (a plate whose hit calling was skipped, and why)."""
    hits: list[dict]
    plates: list[dict]
    notices: list[str]


def hits_header() -> list[str]:
    return ["plate", "well", "compound", "concentration", "class", "score", "robust_z", "p_value", "q_value", "hit",
            "n_fields", "n_cells", "qc"]


def plate_qc_header() -> list[str]:
    return ["plate", "negative_controls", "positive_controls", "samples", "z_prime", "z_prime_robust", "ssmd",
            "fields",
            "fields_qc_not_ok", "share_qc_not_ok", "median_cells_per_field", "hit_calling"]


def call_hits(table: list[dict], plate_map: dict, classes: tuple[str, ...], *, fields: list[dict] | None = None) \
        -> HitCalling:
    """Score every sample well of ``table`` (rows of ``well_table``) against its plate's negative controls.

    Args:
        table: per-well rows (``plate``, ``well``, ``fields``, ``qc``, ``p_<class>``, optional ``n_cells``).
        plate_map: ``read_plate_map``'s entries, with their ``role``.
        fields: ``predictions.csv`` rows (for the per-plate share of fields whose qc is not ok and the median
            cells per field); optional.
    """
    by_plate: dict[str, list[tuple[dict, dict]]] = {}
    for row in table:
        entry = plate_map.get((row["plate"], row["well"])) or plate_map.get(("", row["well"]))
        if entry is not None and entry.get("role") and entry["role"] != "empty":
            by_plate.setdefault(row["plate"], []).append((row, entry))
    hits, plates, notices = [], [], []
    for plate in sorted(by_plate):
        scored, summary, why = _score_plate(by_plate[plate], classes)
        if why:
            notices.append(f"milzoo: plate {plate or '(unnamed)'}: no hit calling, {why}")
        hits += scored
        plates.append({"plate": plate, **summary, **_field_summary(fields, plate), "hit_calling": why or "done"})
    _add_q_values(hits)
    hits.sort(key=lambda h: (h["q_value"] if h["q_value"] is not None else 2.0, h["plate"], h["well"]))
    return HitCalling(hits, plates, notices)


def _score_plate(members: list[tuple[dict, dict]], classes: tuple[str, ...]) -> tuple[list[dict], dict, str]:
    """The hits rows of one plate's sample wells, its Z' and SSMD, and why hit calling was skipped ("" if not)."""
    def usable(role: str) -> list[dict]:
        return [row for row, entry in members if entry["role"] == role and row["qc"] == QC_OK]

    negatives, positives = usable("negative_control"), usable("positive_control")
    samples = [(row, entry) for row, entry in members if entry["role"] == "sample"]
    summary = {"negative_controls": len(negatives), "positive_controls": len(positives), "samples": len(samples),
               "z_prime": None, "z_prime_robust": None, "ssmd": None}
    rows = [_hit_row(row, entry) for row, entry in samples]
    if len(negatives) < MIN_NEGATIVE_CONTROLS:
        return rows, summary, (f"{len(negatives)} negative control well(s) with a field that passed qc, fewer than "
                               f"{MIN_NEGATIVE_CONTROLS}")
    null = np.array([_score(row, _centre([n for n in negatives if n is not row], classes), classes)[0]
                     for row in negatives])
    null_centre, null_spread = float(np.median(null)), max(_MAD * _mad(null), MIN_SPREAD)
    centre = _centre(negatives, classes)
    for hit, (row, _) in zip(rows, samples):
        if row["qc"] != QC_OK:
            continue
        hit["score"], hit["class"] = _score(row, centre, classes)
        hit["robust_z"] = (hit["score"] - null_centre) / null_spread
        hit["p_value"] = 0.5 * math.erfc(hit["robust_z"] / math.sqrt(2))
    if positives:
        pos = np.array([_score(row, centre, classes)[0] for row in positives])
        summary.update(z_prime=_z_prime(pos, null), z_prime_robust=_z_prime_robust(pos, null), ssmd=_ssmd(pos, null))
    return rows, summary, ""


def _centre(controls: list[dict], classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The controls' median probability profile and median mask areas."""
    return (np.median(_profiles(controls, classes, "p"), axis=0),
            np.median(_profiles(controls, classes, "area"), axis=0))


def _score(row: dict, centre: tuple[np.ndarray, np.ndarray], classes: tuple[str, ...]) -> tuple[float, str]:
    """The probability ``row`` gained over the controls' ``centre`` in classes whose masks grew too, and the class
    that gained the most."""
    gained = np.clip(_profiles([row], classes, "p")[0] - centre[0], 0, None)
    grew = _profiles([row], classes, "area")[0] - centre[1] >= MIN_AREA
    supported = gained * grew
    return float(supported.sum()), classes[int(np.argmax(supported if supported.any() else gained))]


def _hit_row(row: dict, entry: dict) -> dict:
    return {"plate": row["plate"], "well": row["well"], "compound": entry["compound"],
            "concentration": entry["concentration"], "class": "", "score": None, "robust_z": None, "p_value": None,
            "q_value": None, "hit": False, "n_fields": row["fields"], "n_cells": row.get("n_cells"), "qc": row["qc"]}


def _profiles(rows: list[dict], classes: tuple[str, ...], kind: str) -> np.ndarray:
    """(wells, classes): each row's ``p_<class>`` (``kind`` "p") or ``area_<class>`` ("area")."""
    return np.array([[float(r.get(f"{kind}_{c}") or 0.0) for c in classes] for r in rows], dtype=np.float64)


def _mad(x: np.ndarray, axis=None):
    return np.median(np.abs(x - np.median(x, axis=axis, keepdims=axis is not None)), axis=axis)


def _z_prime(pos: np.ndarray, neg: np.ndarray) -> float | None:
    gap = abs(float(pos.mean()) - float(neg.mean()))
    return 1.0 - 3.0 * (float(pos.std(ddof=1)) + float(neg.std(ddof=1))) / gap if gap > 0 and len(pos) > 1 else None


def _z_prime_robust(pos: np.ndarray, neg: np.ndarray) -> float | None:
    gap = abs(float(np.median(pos)) - float(np.median(neg)))
    return 1.0 - 3.0 * _MAD * (float(_mad(pos)) + float(_mad(neg))) / gap if gap > 0 else None


def _ssmd(pos: np.ndarray, neg: np.ndarray) -> float | None:
    var = float(pos.var(ddof=1)) + float(neg.var(ddof=1)) if len(pos) > 1 else 0.0
    return (float(pos.mean()) - float(neg.mean())) / math.sqrt(var) if var > 0 else None


def _add_q_values(hits: list[dict]) -> None:
    """Benjamini-Hochberg q-values over every scored well, and ``hit`` where q <= ``HIT_Q``."""
    scored = sorted((h for h in hits if h["p_value"] is not None), key=lambda h: h["p_value"])
    n, running = len(scored), 1.0
    for rank in range(n, 0, -1):
        hit = scored[rank - 1]
        running = min(running, hit["p_value"] * n / rank)
        hit["q_value"], hit["hit"] = running, running <= HIT_Q


def _field_summary(fields: list[dict] | None, plate: str) -> dict:
    mine = [f for f in fields or [] if f.get("plate", "") == plate and f.get("well")]
    not_ok = sum(1 for f in mine if f.get("qc", QC_OK) != QC_OK)
    cells = [float(f["n_cells"]) for f in mine if f.get("n_cells") not in (None, "")]
    return {"fields": len(mine), "fields_qc_not_ok": not_ok, "share_qc_not_ok": not_ok / len(mine) if mine else None,
            "median_cells_per_field": float(np.median(cells)) if cells else None}
