"""Compound-held-out cross-validation: folds never share a compound, every image is tested once,
an interrupted run continues, and the report is written."""

import json

import numpy as np
import pytest

from training import loco
from training.data.mcf7 import MCF7_CLASSES, MCF7_COMPOUNDS
from training.simulate import main as simulate
from training.treatments import compound_folds


def test_moa_round_folds_hold_out_each_compound_once():
    compounds, labels = [], []
    for moa, members in MCF7_COMPOUNDS.items():
        for c in members:
            compounds += [c] * 3
            labels += [moa] * 3
    folds = list(compound_folds(compounds, labels, scheme="moa-round"))
    assert len(folds) == max(len(m) for moa, m in MCF7_COMPOUNDS.items() if moa != "DMSO") == 4
    tested = []
    compounds = np.array(compounds)
    for _, train, test in folds:
        assert not set(compounds[train]) & set(compounds[test])  # no compound on both sides
        assert "DMSO" in set(compounds[train]) and "DMSO" not in set(compounds[test])
        assert len(set(train) | set(test)) == len(compounds)
        # every MOA keeps at least one compound in training
        assert {labels[i] for i in train} == set(MCF7_CLASSES)
        tested += sorted(set(compounds[test]))
    assert sorted(tested) == sorted(c for c in set(compounds) if c != "DMSO")  # each exactly once


def test_fold_scheme_errors():
    with pytest.raises(ValueError, match="one compound"):
        list(compound_folds(["a", "b", "c"], ["X", "X", "Y"], scheme="moa-round"))
    with pytest.raises(ValueError, match="not one of"):
        list(compound_folds(["a"], ["X"], scheme="random"))


@pytest.mark.slow
def test_loco_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    assert simulate(["mcf7", "--n", "40", "--seed", "4", "--out", str(data), "--size", "96", "--workers", "1"]) == 0
    out = tmp_path / "loco"
    argv = ["--data", str(data / "manifest.csv"), "--out", str(out), "--scheme", "moa-round",
            "--channels", "dna,tubulin,actin", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
            "--crop", "64", "--report", str(tmp_path / "loco.md")]
    assert loco.main(argv) == 0
    report = json.loads((out / "loco.json").read_text())
    rows = (data / "manifest.csv").read_text().splitlines()[1:]
    treated = [r for r in rows if ",DMSO," not in r]
    assert report["n_folds"] == 4 and report["n_images"] == len(treated)  # each treated image once, DMSO never
    confusion = np.array(report["image_confusion"])
    assert confusion.sum() == len(treated) and report["image_accuracy"] == pytest.approx(np.trace(confusion) / len(treated))
    assert set(report["per_compound"]) == {r.split(",")[3] for r in treated}
    md = (tmp_path / "loco.md").read_text()
    assert "Compound-held-out cross-validation" in md and "| image accuracy |" in md

    # evaluate() scores treatments too when the manifest has compound and concentration columns
    from training.evaluate import evaluate
    from training.checkpoint import load_checkpoint

    model, _ = load_checkpoint(next((out / "folds").iterdir()) / "run" / "best.pt")
    metrics = evaluate(model, data / "manifest.csv", tmp_path / "eval")
    assert metrics["treatments"]["n_treatments"] == len({tuple(r.split(",")[3:5]) for r in rows})
    t_confusion = np.array(metrics["treatments"]["treatment_confusion"])
    assert metrics["treatments"]["treatment_accuracy"] == pytest.approx(np.trace(t_confusion) / t_confusion.sum())

    # finished folds are not trained again; a fold whose predictions were lost is predicted again
    (next((out / "folds").iterdir()) / "predictions.csv").unlink()
    calls = []
    monkeypatch.setattr("training.train.train", lambda *a, **k: calls.append(a))
    assert loco.main(argv) == 0
    assert calls == []  # its checkpoint was complete: predicted, not retrained
    assert json.loads((out / "loco.json").read_text())["n_images"] == len(treated)


@pytest.mark.slow
def test_loco_refuses_a_manifest_without_compounds(tmp_path, capsys):
    assert simulate(["yeast", "--n", "4", "--seed", "1", "--out", str(tmp_path), "--size", "96",
                     "--workers", "1"]) == 0
    assert loco.main(["--data", str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "o"),
                      "--channels", "gfp,rfp"]) == 1
    assert "needs 'compound' and 'concentration' columns" in capsys.readouterr().err


@pytest.mark.slow
def test_leave_one_compound_out_end_to_end(tmp_path):
    """Ljosa et al.'s protocol (--scheme compound): one fold per compound, each predicted once."""
    data = tmp_path / "data"
    assert simulate(["mcf7", "--n", "40", "--seed", "8", "--out", str(data), "--size", "96", "--workers", "1"]) == 0
    lines = (data / "manifest.csv").read_text().splitlines()
    keep = ("Eg5 inhibitors", "Actin disruptors", "DMSO")  # 2 + 3 compounds and the control
    subset = [lines[0]] + [l for l in lines[1:] if l.split(",")[1] in keep]
    (data / "subset.csv").write_text("\n".join(subset) + "\n")
    out = tmp_path / "loco"
    assert loco.main(["--data", str(data / "subset.csv"), "--out", str(out), "--channels", "dna,tubulin,actin",
                      "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "64"]) == 0
    report = json.loads((out / "loco.json").read_text())
    compounds = {l.split(",")[3] for l in subset[1:]} - {"DMSO"}
    assert report["scheme"] == "compound" and report["n_folds"] == len(compounds) == 5
    assert set(report["per_compound"]) == compounds
    assert report["n_images"] == sum(1 for l in subset[1:] if ",DMSO," not in l)
