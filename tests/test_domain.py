"""Domain-adversarial training on unlabelled images (training/domain.py): the reversal, the schedule,
training and resuming with a domain head, what export keeps, and bad unlabelled data."""

import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from milcnn.process.preprocess import NormalizationConfig
from training.checkpoint import read_checkpoint
from training.domain import GradientReversal, domain_weight_schedule, load_unlabelled
from training.train import TrainConfig, train


def test_gradient_reversal_and_schedule():
    x = torch.ones(3, requires_grad=True)
    y = GradientReversal.apply(x, 0.5)
    assert torch.equal(y, x)
    (2 * y).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -1.0))  # d(2y)/dx = 2, reversed and halved
    assert domain_weight_schedule(0.0) == 0.0 and domain_weight_schedule(1.0) > 0.99
    assert 0 < domain_weight_schedule(0.1) < domain_weight_schedule(0.3) < 1


@pytest.fixture(scope="module")
def unlabelled(tiny_yeast, tmp_path_factory):
    """The tiny yeast images, copied without their manifest: unlabelled images of the same kind."""
    folder = tmp_path_factory.mktemp("unlabelled")
    for p in sorted((tiny_yeast.parent / "images").glob("*.tif"))[:6]:
        shutil.copy(p, folder / p.name)
    return folder


def _cfg(tiny_yeast, out, unlabelled, **kw):
    settings = dict(data=str(tiny_yeast), val=str(tiny_yeast), out=str(out), channels="gfp,rfp", epochs=2,
                    steps_per_epoch=4, batch_size=4, crop=64, width=8, seed=3, threads=2,
                    domain_data=str(unlabelled), domain_weight=0.5, domain_batch=2)
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.mark.slow
def test_training_with_a_domain_head_resumes_exactly_and_exports_without_it(tiny_yeast, unlabelled, tmp_path):
    from training.export import export_folder

    whole = tmp_path / "whole"
    best = train(_cfg(tiny_yeast, whole, unlabelled, domain_class_weighting=True), progress=False)
    ckpt = read_checkpoint(whole / "last.pt")
    assert set(ckpt["domain"]) >= {"head.0.weight", "head.2.bias", "target_prior"}
    assert not torch.allclose(ckpt["domain"]["target_prior"], torch.full((11,), 1 / 11))  # estimated as it trained
    assert json.loads((whole / "train_config.json").read_text())["domain_data"] == str(unlabelled)
    # killed after the first epoch and resumed: the same weights, the domain head's included
    part = tmp_path / "part"
    train(_cfg(tiny_yeast, part, unlabelled, domain_class_weighting=True), progress=False, stop_after=1)
    train(_cfg(tiny_yeast, part, unlabelled, domain_class_weighting=True), resume=str(part / "last.pt"), progress=False)
    resumed = read_checkpoint(part / "last.pt")
    for key in ckpt["model"]:
        assert torch.equal(ckpt["model"][key], resumed["model"][key]), key
    for key in ckpt["domain"]:
        assert torch.equal(ckpt["domain"][key], resumed["domain"][key]), key
    # the adversary changes what is learnt (same seed, same labelled crops)
    plain = tmp_path / "plain"
    train(_cfg(tiny_yeast, plain, unlabelled, domain_data=None), progress=False)
    other = read_checkpoint(plain / "last.pt")["model"]
    assert not torch.equal(other["backbone.0.0.weight"], ckpt["model"]["backbone.0.0.weight"])
    folder = export_folder(best, tmp_path / "model", name="tiny", version="0.0.1")
    from milcnn import Classifier

    clf = Classifier.from_dir(folder, device="cpu")
    image = tifffile.imread(next(unlabelled.glob("*.tif")))
    assert clf.predict(image).mask.shape == image.shape[-2:]


def test_class_weighting_follows_the_predicted_mix_of_the_unlabelled_images():
    from training.domain import DomainAdversary, _Unlabelled

    images = _Unlabelled([np.zeros((2, 64, 64), np.float32)], 3)
    adversary = DomainAdversary(8, images, crop=64, batch=1, weight=1.0, seed=0, n_classes=3, class_weighting=True)
    targets = torch.eye(3).repeat(2, 1)  # a balanced labelled batch: 2 crops of each class
    uniform = torch.full((2, 3), 0.5)
    assert torch.allclose(adversary.crop_weights(targets, uniform), torch.ones(8))  # nothing to correct
    seen = torch.tensor([[0.9, 0.1, 0.1], [0.8, 0.1, 0.0]])  # the unlabelled crops look like class 0
    for _ in range(300):
        w = adversary.crop_weights(targets, seen)
    assert w[0] > 2 * w[1] and w[0] > 2 * w[2] and torch.allclose(w[:6].mean(), torch.tensor(1.0))
    assert torch.equal(w[6:], torch.ones(2))  # the unlabelled crops themselves keep weight 1
    features = torch.randn(8, 8, 4, 4)
    probabilities = torch.cat([torch.full((6, 3), 0.3), seen])
    weighted = adversary.loss(features, 6, 1.0, targets=targets, probabilities=probabilities)
    plain = DomainAdversary(8, images, crop=64, batch=1, weight=1.0, seed=0)
    plain.head.load_state_dict(adversary.head.state_dict())
    assert not torch.allclose(weighted, plain.loss(features, 6, 1.0))
    with pytest.raises(ValueError, match="number of classes"):
        DomainAdversary(8, images, crop=64, batch=1, weight=1.0, seed=0, class_weighting=True)


@pytest.mark.slow
def test_bad_unlabelled_data_is_named(tiny_yeast, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_unlabelled(tmp_path / "nowhere", ("gfp", "rfp"), 3, NormalizationConfig())
    (tmp_path / "one").mkdir()
    tifffile.imwrite(tmp_path / "one" / "three.tif", np.zeros((3, 32, 32), np.uint16))
    with pytest.raises(ValueError, match="three.tif"):
        load_unlabelled(tmp_path / "one", ("gfp", "rfp"), 3, NormalizationConfig())
    with pytest.raises(ValueError, match="needs --cell-diameter"):
        train(TrainConfig(data=str(tiny_yeast), val=str(tiny_yeast), channels="gfp,rfp", out=str(tmp_path / "run"),
                          domain_data=str(tmp_path / "one"), domain_cell_diameter=40.0), progress=False)
    with pytest.raises(ValueError, match="--domain-cell-diameter: cell_diameter must be a positive number, got 0"):
        train(TrainConfig(data=str(tiny_yeast), val=str(tiny_yeast), channels="gfp,rfp", out=str(tmp_path / "run"),
                          cell_diameter=27.0, domain_data=str(tmp_path / "one"), domain_cell_diameter=0.0),
              progress=False)


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_unlabelled_mosaics_carry_no_labels(real_labelled, tmp_path):
    from training.domain import main

    assert main(["mosaics", "--set", "yeast-chong", "--half", "validation", "--k", "2", "--views", "1",
                 "--data", str(real_labelled), "--out", str(tmp_path / "u")]) == 0
    files = sorted((tmp_path / "u").iterdir())
    assert len(files) == 12 and all(f.suffix == ".tif" and f.stem.isdigit() for f in files)  # 12 validation fields
    assert tifffile.imread(files[0]).shape[0] == 2


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_pseudo_labels_are_the_models_whole_field_calls_not_the_sets_labels(real_labelled, tmp_path):
    import csv

    from milcnn import Classifier
    from training.data.real import field_mosaic, load_fields
    from training.domain import main

    def calls(root, out):
        assert main(["pseudo-labels", "--set", "bbbc021-cells", "--model", "mcf7-moa", "--half", "all", "--k", "2",
                     "--views", "1", "--data", str(root), "--out", str(out)]) == 0
        rows = list(csv.DictReader(open(out / "manifest.csv")))
        assert len(rows) == 20 and all((out / r["path"]).is_file() for r in rows)  # one view of each of 20 fields
        return {r["field"]: r["label"] for r in rows}

    original = calls(real_labelled, tmp_path / "a")
    # the same fields filed under each other's treatment: the labels must follow the fields, not the folders
    swapped = tmp_path / "swapped" / "bbbc021-cells"
    shutil.copytree(real_labelled / "bbbc021-cells" / "DMSO", swapped / "Protein_synthesis")
    shutil.copytree(real_labelled / "bbbc021-cells" / "Protein_synthesis", swapped / "DMSO")
    assert calls(swapped.parent, tmp_path / "b") == original
    clf = Classifier.from_hub("mcf7-moa", device="cpu")
    field = load_fields("bbbc021-cells", real_labelled, channels=clf.channels)[0]
    assert original[field.path.name] == clf.predict(field_mosaic(field.cells)).top
    assert tifffile.imread(tmp_path / "a" / "00000.tif").shape == (3, 2 * field.cells.shape[2], 2 * field.cells.shape[3])


@pytest.mark.needs_realdata
@pytest.mark.slow
def test_pseudo_labels_name_a_bad_model(real_labelled, tmp_path, capsys):
    from training.domain import main

    assert main(["pseudo-labels", "--set", "bbbc021-cells", "--model", str(tmp_path / "nothing"),
                 "--data", str(real_labelled), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and "nothing" in err and len(err.strip().splitlines()) == 1
