"""Treatment-level evaluation for drug screens (Ljosa et al. 2013): aggregate images per treatment,
and split leave-one-compound-out so no compound is in both training and test.

A treatment is a (compound, concentration). Its prediction is the class of the mean of its
images' probabilities; its truth is the label its images share.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np

from .metrics import confusion_matrix

__all__ = ["treatment_probabilities", "treatment_metrics", "leave_one_compound_out", "compound_folds",
           "read_treatments", "CONTROLS"]

#: compounds that are controls: always in training, never held out as a test compound
CONTROLS = ("DMSO",)


def treatment_probabilities(probs: np.ndarray, treatments: Sequence[tuple]) -> dict[tuple, np.ndarray]:
    """Mean image probability per treatment.

    Args:
        probs: (N, K) image-level probabilities.
        treatments: N treatment keys, e.g. ``(compound, concentration)``.

    Returns:
        treatment -> (K,) mean probability, in first-seen order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) != len(treatments):
        raise ValueError(f"{len(probs)} probability rows but {len(treatments)} treatment keys")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(treatments):
        groups[tuple(key)].append(i)
    return {key: probs[idx].mean(axis=0) for key, idx in groups.items()}


def treatment_metrics(probs: np.ndarray, treatments: Sequence[tuple], labels: Sequence[str],
                      classes: Sequence[str]) -> dict:
    """Image- and treatment-level accuracy and the treatment-level confusion matrix.

    Args:
        probs: (N, K) image probabilities, columns in ``classes`` order.
        treatments: N treatment keys.
        labels: N true class names (images of one treatment must share it).
        classes: the K class names.

    Raises:
        ValueError: a treatment's images carry different labels.
    """
    classes = list(classes)
    probs = np.asarray(probs)
    truth = np.array([classes.index(label) for label in labels])
    image_acc = float((probs.argmax(axis=1) == truth).mean())
    per_treatment = treatment_probabilities(probs, treatments)
    label_of: dict[tuple, str] = {}
    for key, label in zip(treatments, labels):
        if label_of.setdefault(tuple(key), label) != label:
            raise ValueError(f"treatment {key} has images labelled {label_of[tuple(key)]!r} and {label!r}")
    keys = list(per_treatment)
    t_true = np.array([classes.index(label_of[k]) for k in keys])
    t_pred = np.array([int(per_treatment[k].argmax()) for k in keys])
    return {
        "n_images": len(probs), "n_treatments": len(keys), "image_accuracy": image_acc,
        "treatment_accuracy": float((t_true == t_pred).mean()),
        "treatment_confusion": confusion_matrix(t_true, t_pred, len(classes)).tolist(),
        "treatments": [{"treatment": list(k), "label": label_of[k], "predicted": classes[p]}
                       for k, p in zip(keys, t_pred)],
    }


def leave_one_compound_out(compounds: Sequence[str], *, controls: Sequence[str] = CONTROLS
                           ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Folds ``(held-out compound, train indices, test indices)``, one per non-control compound.

    Every image of the held-out compound (all its concentrations) is in test and none in
    train; control images are always in train.
    """
    compounds = np.asarray(compounds, dtype=object)
    for compound in sorted(set(compounds) - set(controls)):
        test = np.flatnonzero(compounds == compound)
        train = np.flatnonzero(compounds != compound)
        yield compound, train, test


def compound_folds(compounds: Sequence[str], labels: Sequence[str], *, scheme: str = "compound",
                   controls: Sequence[str] = CONTROLS) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Cross-validation folds in which no compound is in both train and test.

    Args:
        compounds: the compound of each image.
        labels: the class (MOA) of each image.
        scheme: ``compound``: one fold per non-control compound (Ljosa et al. 2013's
            leave-one-compound-out); ``moa-round``: fold j holds out the j-th compound (in
            name order) of every MOA at once, so there are as many folds as the largest MOA
            has compounds; every compound is still tested exactly once, by a model that never
            saw it, for a few trainings instead of one per compound (but each trains on fewer
            compounds).
        controls: compounds that are always in training.

    Yields:
        (fold name, train indices, test indices).
    """
    if scheme not in ("compound", "moa-round"):
        raise ValueError(f"fold scheme {scheme!r} is not one of compound, moa-round")
    compounds, labels = np.asarray(compounds, dtype=object), np.asarray(labels, dtype=object)
    by_moa: dict[str, list[str]] = defaultdict(list)
    for compound, label in sorted(set(zip(compounds, labels))):
        if compound not in controls:
            by_moa[label].append(compound)
    for moa, members in by_moa.items():
        if len(members) < 2:
            raise ValueError(f"MOA {moa!r} has one compound ({members[0]}): holding it out leaves none of its "
                             "class to train on; leave it out of the manifest, or add a compound")
    if scheme == "compound":
        yield from leave_one_compound_out(compounds, controls=controls)
        return
    for j in range(max(len(m) for m in by_moa.values())):
        held = sorted(m[j] for m in by_moa.values() if j < len(m))
        test = np.flatnonzero(np.isin(compounds, held))
        yield f"fold {j + 1}: " + ", ".join(held), np.setdiff1d(np.arange(len(compounds)), test), test


def read_treatments(manifest) -> list[tuple[str, float]] | None:
    """The (compound, concentration) of each row of a manifest, or None if it has no such columns.

    Raises:
        ValueError: a concentration is not a number (names the row).
    """
    import csv
    from pathlib import Path

    with open(Path(manifest), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "compound" not in rows[0] or "concentration" not in rows[0]:
        return None
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            out.append((row["compound"], float(row["concentration"])))
        except (TypeError, ValueError):
            raise ValueError(f"{manifest}, line {line}: concentration {row['concentration']!r} is not a number")
    return out


def evaluate_treatments(model, manifest, *, device: str = "cpu") -> dict:
    """Run an SDK model over a manifest with ``compound`` and ``concentration`` columns and
    score it per image and per treatment (``treatment_metrics``)."""
    from milcnn import Classifier
    from .data.manifest import read_manifest
    from .scoring import score_manifest, sdk_predictor

    clf = model if isinstance(model, Classifier) else Classifier.from_hub(str(model), device=device)
    samples, _, _ = read_manifest(manifest, channels=clf.channels, classes=clf.classes)
    treatments = read_treatments(manifest)
    if treatments is None:
        raise ValueError(f"{manifest}: needs 'compound' and 'concentration' columns for treatment-level evaluation")
    _, probs = score_manifest(sdk_predictor(clf, training_scale=False), manifest, channels=clf.channels,
                              classes=clf.classes, baseline=False)  # images as users' come (default input scale)
    labels = ["|".join(s.labels) for s in samples]
    return {"model": clf.name, "manifest": str(manifest), **treatment_metrics(probs, treatments, labels, clf.classes)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m training.treatments",
                                     description="Image- and treatment-level accuracy of a model on a drug screen.")
    parser.add_argument("model", help="zoo name, Hub repo or model folder")
    parser.add_argument("--data", required=True, help="manifest with compound and concentration columns")
    parser.add_argument("--out", help="write the full report (JSON) here")
    args = parser.parse_args(argv)
    try:
        report = evaluate_treatments(args.model, args.data)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out:
        from milcnn.io.images import write_atomic

        with write_atomic(args.out, "w") as fh:
            fh.write(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("model", "n_images", "n_treatments", "image_accuracy",
                                             "treatment_accuracy")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
