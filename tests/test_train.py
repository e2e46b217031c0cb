import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.evaluate import evaluate
from training.evaluate import main as evaluate_main
from training.checkpoint import load_checkpoint, read_checkpoint
from training.train import TrainConfig, train
from training.train import main as train_main
from training.data.manifest import read_manifest


pytestmark = pytest.mark.slow  # every test here trains, exports or starts a process


def tiny_config(manifest, out, **kw):
    settings = dict(data=str(manifest), val=str(manifest), out=str(out), channels="gfp,rfp", epochs=3,
                    steps_per_epoch=8, batch_size=8, crop=64, width=8, seed=3, threads=2)
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(tiny_yeast, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    best = train(tiny_config(tiny_yeast, out), progress=False)
    return out, best


def test_loss_falls(tiny_yeast, tmp_path):
    rows = tiny_yeast.read_text().splitlines()
    two_classes = [rows[0]] + [r for r in rows[1:] if r.split(",")[1] in ("nucleus", "cytosol")]
    manifest = tiny_yeast.parent / "two_classes.csv"
    manifest.write_text("\n".join(two_classes) + "\n")
    train(tiny_config(manifest, tmp_path, epochs=6, steps_per_epoch=10, batch_size=8, lr=5e-3), progress=False)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last_two = (history[-1]["train_loss"] + history[-2]["train_loss"]) / 2
    assert last_two < 0.75 * history[0]["train_loss"]  # about 0.69 (chance) in the first epoch
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_files_are_written(trained):
    out, best = trained
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert best.is_file() and (out / "last.pt").is_file()
    assert json.loads((out / "model_config.json").read_text())["channels"] == ["gfp", "rfp"]


def test_checkpoint_loads_weights_only(trained):
    out, best = trained
    ckpt = read_checkpoint(best)
    assert ckpt["format"] == "milcnn-checkpoint/1"
    model, _ = load_checkpoint(best)
    assert model.config.classes[0] == "ER"


def test_resume_continues_exactly(tiny_yeast, tmp_path, trained):
    out, _ = trained
    cfg = tiny_config(tiny_yeast, tmp_path)
    train(cfg, progress=False, stop_after=2)
    metrics = tmp_path / "metrics.jsonl"
    assert len(metrics.read_text().splitlines()) == 2
    with open(metrics, "a") as fh:  # killed after logging epoch 3, before saving it
        fh.write('{"epoch": 3, "train_loss": 1.0}\n')
    train(cfg, resume=str(tmp_path / "last.pt"), progress=False)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == list(range(1, cfg.epochs + 1))
    whole = read_checkpoint(out / "last.pt")["model"]
    resumed = read_checkpoint(tmp_path / "last.pt")["model"]
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def test_init_starts_from_trained_weights(tiny_yeast, tmp_path, trained):
    out, best = trained
    cfg = tiny_config(tiny_yeast, tmp_path, epochs=2, lr=0.0, weight_decay=0.0, init=str(best), keep_epochs=True)
    train(cfg, progress=False)
    start = read_checkpoint(best)["model"]
    for epoch in ("001.pt", "002.pt"):  # learning rate 0: every kept epoch holds exactly the starting weights
        kept = read_checkpoint(tmp_path / "epochs" / epoch)
        assert kept["epoch"] == int(epoch[:3]) - 1
        for key, value in start.items():
            if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):  # batch norm still counts
                assert torch.equal(value, kept["model"][key]), key
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["001.pt", "002.pt"]
    with pytest.raises(ValueError, match="model settings differ"):
        train(tiny_config(tiny_yeast, tmp_path / "wider", width=12, init=str(best)), progress=False)


def test_evaluate_end_to_end(trained, tiny_yeast, tmp_path):
    _, best = trained
    model, _ = load_checkpoint(best)
    metrics = evaluate(model, tiny_yeast, tmp_path)
    seg = metrics["segmentation"]
    assert metrics["n_images"] == 22 and seg["n_images"] == 22
    ious = [v for v in seg["per_class_iou"].values() if v is not None]
    assert seg["mean_iou"] == pytest.approx(sum(ious) / len(ious)) and 0 < seg["otsu_mean_iou"] <= 1
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = [r.split(",") for r in (tmp_path / "confusion.csv").read_text().splitlines()]
    counts = [[int(v) for v in r[1:]] for r in rows[1:]]
    assert len(rows) == 12 and sum(map(sum, counts)) == 22
    assert metrics["accuracy"] == pytest.approx(sum(counts[i][i] for i in range(11)) / 22)
    assert evaluate_main([str(best), "--data", str(tiny_yeast), "--out", str(tmp_path / "cli")]) == 0


def test_evaluate_applies_a_calibration_as_the_sdk_does(trained, tiny_yeast, tmp_path):
    """--calibration MODEL_FOLDER: every probability calibrated first (the metrics follow the calibrated top
    class), and ECE and the label accuracy at the threshold reported; a folder without the block is refused."""
    from milcnn.model.config import write_config

    import json
    import shutil

    import numpy as np

    from milcnn.process.calibration import Calibration

    _, best = trained
    model, _ = load_checkpoint(best)
    # a calibration that favours the last class strongly: the calibrated top class is then always that class
    k = len(model.config.classes)
    strong = Calibration("vector_scaling", (1.0,) * k, (0.0,) * (k - 1) + (50.0,))
    metrics = evaluate(model, tiny_yeast, tmp_path / "cal", calibration=strong)
    assert metrics["accuracy"] == pytest.approx(2 / 22)  # 2 of the 22 tiny images are of the last class
    assert metrics["calibration"]["method"] == "vector_scaling" and metrics["calibration"]["unassigned"] == 0.0
    folder = tmp_path / "model"
    shutil.copytree(Path(__file__).resolve().parents[1] / "zoo" / "yeast-loc", folder)
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = strong.to_dict()
    config.pop("qc")
    write_config(folder, config)
    assert evaluate_main([str(best), "--data", str(tiny_yeast), "--out", str(tmp_path / "cli"),
                          "--calibration", str(folder)]) == 0
    written = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(2 / 22) and np.isfinite(written["calibration"]["ece"])
    config.pop("calibration")
    write_config(folder, config)
    assert evaluate_main([str(best), "--data", str(tiny_yeast), "--out", str(tmp_path / "none"),
                          "--calibration", str(folder)]) == 2


def test_cli_reports_bad_manifest_rows(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("path,label\nnot-there.tif,a\n")
    code = train_main(["--data", str(tmp_path / "m.csv"), "--channels", "gfp", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "line 2: file" in err and "not-there.tif not found" in err and "Traceback" not in err


def test_multi_label_manifest_trains_a_multi_label_model(tiny_yeast, tmp_path):
    rows = tiny_yeast.read_text().splitlines()
    # merge pairs of classes into two-label images: "ER|bud" etc.
    merged = [rows[0]] + [f"{p},{lab}|{rows[1 + (i + 1) % 22].split(',')[1]},{m}"
                          for i, r in enumerate(rows[1:]) for p, lab, m in [r.split(",")]]
    manifest = tiny_yeast.parent / "multi.csv"
    manifest.write_text("\n".join(merged) + "\n")
    best = train(tiny_config(manifest, tmp_path, epochs=1, steps_per_epoch=2), progress=False)
    model, _ = load_checkpoint(best)
    assert model.config.multi_label
    metrics = evaluate(model, manifest, tmp_path / "eval")
    assert sum(m["support"] for m in metrics["per_class"].values()) == 44
    from training.data.dataset import ImageSet
    from training.scoring import predict_set

    cfg = model.config
    images = ImageSet(read_manifest(manifest, channels=cfg.channels)[0], cfg.channels, cfg.classes, cfg.normalization)
    probs, _ = predict_set(model, images)
    exact = np.mean([set(np.flatnonzero(p >= 0.5)) == set(np.flatnonzero(t)) for p, t in zip(probs, images.targets)])
    assert metrics["accuracy"] == pytest.approx(exact)  # exact label sets, not per class


def test_norm_high_is_recorded_for_the_sdk(tiny_yeast, tmp_path):
    """The normalisation the network was trained with is the one its checkpoint (and so its export) records."""
    best = train(tiny_config(tiny_yeast, tmp_path, epochs=1, steps_per_epoch=2, norm_high=99.0), progress=False)
    assert json.loads((tmp_path / "model_config.json").read_text())["normalization"]["high"] == 99.0
    model, _ = load_checkpoint(best)
    assert model.config.normalization.high == 99.0
    with pytest.raises(ValueError, match="high"):
        train(tiny_config(tiny_yeast, tmp_path / "bad", norm_high=0.5), progress=False)
