"""Treatment-level evaluation for drug screens (Ljosa et al. 2013): aggregate images per treatment,
and split leave-one-compound-out so no compound is in both training and test.

A treatment is a (compound, concentration). Its prediction is the class of the mean of its
images' probabilities; its truth is the label its images share.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np

from training.metrics import confusion_matrix

__all__ = ["treatment_probabilities", "treatment_metrics", "leave_one_compound_out", "CONTROLS"]

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
