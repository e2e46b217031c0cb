"""The one decision rule: from calibrated probabilities and qc to the label a user reads.

``Prediction.label``, ``predictions.csv``, ``wells.csv``, ``treatments.csv``, ``plate.png`` and the
napari table all call ``decide``: the label is the top class when its (calibrated) probability reaches
``threshold`` and the image's qc is ``ok``, else ``unassigned``. Multi-label models also list every class
at or above ``threshold`` (``labels``, ``a|b``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from milcnn.process.quality import QC_OK

__all__ = ["UNASSIGNED", "Call", "decide"]

UNASSIGNED = "unassigned"  # the label where no class reaches the threshold, or qc is not ok


@dataclass(frozen=True)
class Call:
    """``label``: the top class or ``unassigned``; ``labels``: every class at or above the threshold joined
    by ``|`` (multi-label models; ``label`` again for single-label ones); ``top``: the top class whatever
    its probability; ``probability``: its probability."""

    label: str
    labels: str
    top: str
    probability: float


def decide(probabilities, classes, *, threshold: float, multi_label: bool = False, qc: str = QC_OK,
           argmax: bool = False) -> Call:
    """The label of one image (or well, or treatment) from its calibrated probabilities.

    Args:
        probabilities: (K,) in the order of ``classes``.
        threshold: the probability the top class must reach.
        qc: the image's qc (``milcnn.process.quality``); anything but ``ok`` makes it ``unassigned``.
        argmax: keep the top class below ``threshold`` (never when qc is not ok).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    k = int(np.argmax(p))
    top, best = classes[k], float(p[k])
    trusted = qc == QC_OK
    label = top if trusted and (best >= threshold or argmax) else UNASSIGNED
    if multi_label and trusted:
        labels = "|".join(c for c, v in zip(classes, p) if v >= threshold) or (top if argmax else UNASSIGNED)
    else:
        labels = label
    return Call(label=label, labels=labels, top=top, probability=best)
