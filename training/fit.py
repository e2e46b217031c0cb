"""The epoch loop that ``training.train`` and ``training.finetune`` share: one epoch of steps, validation,
the run's record (``metrics.jsonl``, one JSON object per epoch) and its checkpoints (``last.pt``, ``best.pt``
and, with ``keep_epochs``, ``epochs/NNN.pt``, through ``training.checkpoint``).

The checkpoint's history is the record: a run killed after logging an epoch but before saving it would
otherwise log that epoch twice on resume, so ``metrics.jsonl`` is rewritten from it at the start.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from milcnn.io.images import write_atomic
from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint

__all__ = ["FitState", "fit", "resume_state"]

log = logging.getLogger(__name__)


def _no_best() -> dict:
    return {"accuracy": -1.0, "loss": float("inf"), "epoch": -1}


@dataclass
class FitState:
    """Where a run stands: the next epoch, the best epoch so far (validation accuracy, ties broken by the
    lower loss) and every epoch's record."""

    start_epoch: int = 0
    best: dict = field(default_factory=_no_best)
    history: list = field(default_factory=list)


def resume_state(ckpt: dict, model, optimizer, scheduler) -> FitState:
    """A stopped run's model, optimizer and schedule restored from its ``last.pt`` contents."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return FitState(ckpt["epoch"] + 1, ckpt["best"], ckpt["history"])


def fit(model, optimizer, scheduler, *, out: Path, epochs: int, state: FitState, run_epoch: Callable[[int], dict],
        validate: Callable[[], tuple[float, float]] | None = None, checkpoint: Callable[[], dict] = dict,
        stop_after: int | None = None, keep_epochs: bool = False) -> Path:
    """Run epochs ``state.start_epoch`` .. ``epochs`` (or ``stop_after``, as if interrupted); returns ``best.pt``.

    Args:
        run_epoch: trains one epoch (its index) with the model in train mode; returns the record's
            ``train_loss`` (and anything else to record, e.g. ``step``).
        validate: ``(loss, accuracy)`` on the validation images, the model in eval mode; without it every
            epoch is the best so far (the latest model is the one to export).
        checkpoint: what the run adds to each checkpoint (``model_config``, its settings).
    """
    out = Path(out)
    with write_atomic(out / "metrics.jsonl", "w") as fh:
        fh.writelines(json.dumps(record) + "\n" for record in state.history)
    best, history = state.best, state.history
    for epoch in range(state.start_epoch, min(epochs, stop_after or epochs)):
        t_epoch = time.time()
        model.train()
        record = {"epoch": epoch + 1, **run_epoch(epoch)}
        model.eval()
        if validate is not None:
            record["val_loss"], record["val_accuracy"] = validate()
        record.update(lr=scheduler.get_last_lr()[0], seconds=time.time() - t_epoch)
        improved = validate is None or (record["val_accuracy"], -record["val_loss"]) > (best["accuracy"], -best["loss"])
        if improved:
            best = {"accuracy": record.get("val_accuracy", -1.0), "loss": record.get("val_loss", float("inf")),
                    "epoch": epoch + 1}
        history.append(record)
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        ckpt = {"format": CHECKPOINT_FORMAT, **checkpoint(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                "best": best, "history": history}
        save_checkpoint(ckpt, out / "last.pt")
        if improved:
            save_checkpoint(ckpt, out / "best.pt")
        if keep_epochs:
            (out / "epochs").mkdir(exist_ok=True)
            save_checkpoint(ckpt, out / "epochs" / f"{epoch + 1:03d}.pt")
        val = (f", val loss {record['val_loss']:.4f}, val accuracy {record['val_accuracy']:.4f}"
               if validate is not None else "")
        step = f" (step {record['step']})" if "step" in record else ""
        log.info("epoch %d/%d%s: train loss %.4f%s%s, %.0f s", epoch + 1, epochs, step, record["train_loss"], val,
                 " (best)" if improved and validate is not None else "", record["seconds"])
    return out / "best.pt"
