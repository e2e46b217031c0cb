"""The BBBC021 loader on a fixture in the published layout, and treatment-level evaluation."""

import csv

import numpy as np
import pytest
import tifffile

from training.data.bbbc021 import IMAGE_CSV, MOA_CSV, BBBC021Error, main, read_bbbc021, write_manifest
from training.data.manifest import load_image, read_manifest
from training.data.mcf7 import MCF7Params, simulate_mcf7_image
from training.simulate import image_rng
from training.treatments import leave_one_compound_out, treatment_metrics, treatment_probabilities

HEADER = ["TableNumber", "ImageNumber", "Image_FileName_DAPI", "Image_PathName_DAPI", "Image_FileName_Tubulin",
          "Image_PathName_Tubulin", "Image_FileName_Actin", "Image_PathName_Actin", "Image_Metadata_Plate_DAPI",
          "Image_Metadata_Well_DAPI", "Replicate", "Image_Metadata_Compound", "Image_Metadata_Concentration"]
TREATMENTS = [("taxol", 0.3, "Microtubule stabilizers"), ("taxol", 1.0, "Microtubule stabilizers"),
              ("nocodazole", 1.0, "Microtubule destabilizers"), ("DMSO", 0.0, "DMSO")]


@pytest.fixture()
def bbbc021(tmp_path):
    """Two plates in BBBC021's folders and CSVs, with simulated MCF-7 fields (one 16-bit TIFF per
    stain): 3 fields per annotated treatment, plus an unannotated compound the loader must leave out."""
    root = tmp_path / "BBBC021"
    rows = []
    plates = ["Week1_22123", "Week2_24121"]
    for i, (compound, conc, _) in enumerate(TREATMENTS + [("mystery", 5.0, None)]):
        for field in range(3):
            plate = plates[field % 2]
            folder = root / plate.split("_")[0] / plate
            folder.mkdir(parents=True, exist_ok=True)
            names = []
            moa = TREATMENTS[i][2] if i < len(TREATMENTS) else "DMSO"
            image, _ = simulate_mcf7_image(moa, image_rng(i, field), MCF7Params(size=96))
            for c, stain in enumerate(("DAPI", "Tubulin", "Actin")):
                name = f"{plate}_B{i:02d}_s{field + 1}_w{stain}.tif"
                tifffile.imwrite(folder / name, image[c])
                names.append(name)
            path = f"{plate.split('_')[0]}/{plate}"
            rows.append(["1", str(len(rows) + 1), names[0], path, names[1], path, names[2], path, plate,
                         f"B{i:02d}", "1", compound, str(conc)])
    with open(root / IMAGE_CSV, "w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    with open(root / MOA_CSV, "w", newline="") as fh:
        csv.writer(fh).writerows([["compound", "concentration", "moa"], *[[c, str(k), m] for c, k, m in TREATMENTS]])
    return root


def test_reads_the_annotated_fields_into_a_training_manifest(bbbc021, tmp_path):
    fields = read_bbbc021(bbbc021)
    assert len(fields) == 12 and {f.compound for f in fields} == {"taxol", "nocodazole", "DMSO"}
    out = write_manifest(fields, tmp_path / "manifest" / "bbbc021.csv")
    samples, channels, classes = read_manifest(out, channels=("dna", "tubulin", "actin"))
    assert channels == ("dna", "tubulin", "actin") and len(samples) == 12
    assert set(classes) == {"Microtubule stabilizers", "Microtubule destabilizers", "DMSO"}
    assert {s.group for s in samples} == {"taxol", "nocodazole", "DMSO"}
    image = load_image(samples[0], 3)
    assert image.shape == (3, 96, 96) and image.dtype == np.uint16
    dapi = tifffile.imread(fields[0].paths["dna"])
    np.testing.assert_array_equal(image[0], dapi)
    with open(out) as fh:
        row = next(csv.DictReader(fh))
    assert row["compound"] == "taxol" and float(row["concentration"]) == 0.3 and row["plate"] == "Week1_22123"


def test_cli(bbbc021, tmp_path, capsys):
    assert main([str(bbbc021), "--out", str(tmp_path / "m.csv")]) == 0
    assert "12 fields of view, 4 treatments, 3 compounds, 3 MOAs" in capsys.readouterr().out


def test_missing_pieces_are_named(bbbc021):
    (bbbc021 / "Week2" / "Week2_24121" / "Week2_24121_B00_s2_wActin.tif").unlink()
    with pytest.raises(BBBC021Error, match=r"1 image file\(s\) not found:\n  BBBC021_v1_image.csv line 3: .*wActin"):
        read_bbbc021(bbbc021)
    text = (bbbc021 / MOA_CSV).read_text().replace("moa", "mechanism")
    (bbbc021 / MOA_CSV).write_text(text)
    with pytest.raises(BBBC021Error, match="BBBC021_v1_moa.csv: missing column\\(s\\) moa"):
        read_bbbc021(bbbc021)
    (bbbc021 / MOA_CSV).unlink()
    with pytest.raises(BBBC021Error, match="BBBC021_v1_moa.csv: not found"):
        read_bbbc021(bbbc021)


def test_missing_image_column_and_bad_concentration(bbbc021):
    text = (bbbc021 / IMAGE_CSV).read_text()
    (bbbc021 / IMAGE_CSV).write_text(text.replace("Image_PathName_Tubulin", "PathTubulin"))
    with pytest.raises(BBBC021Error, match="missing column\\(s\\) Image_PathName_Tubulin"):
        read_bbbc021(bbbc021)
    (bbbc021 / IMAGE_CSV).write_text(text.replace(",0.3\n", ",zero point three\n", 1))
    with pytest.raises(BBBC021Error, match="line 2: concentration 'zero point three' is not a number"):
        read_bbbc021(bbbc021)


def test_treatment_aggregation_and_metrics():
    classes = ["A", "B"]
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55],   # t1 (A): images 1/3 right, mean 0.58 -> A
                      [0.2, 0.8], [0.3, 0.7]])                # t2 (B)
    treatments = [("x", 1.0)] * 3 + [("y", 2.0)] * 2
    labels = ["A"] * 3 + ["B"] * 2
    mean = treatment_probabilities(probs, treatments)
    np.testing.assert_allclose(mean[("x", 1.0)], [0.5833333, 0.4166667], atol=1e-6)
    m = treatment_metrics(probs, treatments, labels, classes)
    assert m["image_accuracy"] == pytest.approx(3 / 5) and m["treatment_accuracy"] == 1.0
    assert m["treatment_confusion"] == [[1, 0], [0, 1]] and m["n_treatments"] == 2
    with pytest.raises(ValueError, match="has images labelled 'A' and 'B'"):
        treatment_metrics(probs, treatments, ["A", "B", "A", "B", "B"], classes)


def test_leave_one_compound_out_never_splits_a_compound():
    compounds = ["taxol", "taxol", "DMSO", "nocodazole", "DMSO", "taxol", "AZ138"]
    folds = list(leave_one_compound_out(compounds))
    assert [f[0] for f in folds] == ["AZ138", "nocodazole", "taxol"]  # the control is never held out
    for held_out, train, test in folds:
        assert {compounds[i] for i in test} == {held_out}
        assert held_out not in {compounds[i] for i in train}
        assert {i for i, c in enumerate(compounds) if c == "DMSO"} <= set(train)
        assert sorted([*train, *test]) == list(range(len(compounds)))


@pytest.mark.slow
def test_retrain_script_runs_on_the_published_layout(bbbc021, tmp_path):
    """zoo/retrain_bbbc021.sh, the one command behind the model card's Retrain section, end to end
    on the fixture (a tiny budget); run twice, the second continues from the finished checkpoint."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "EPOCHS": "1", "STEPS": "2", "BATCH": "2", "CROP": "64",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = tmp_path / "retrained"
    for _ in range(2):
        proc = subprocess.run(["bash", str(root / "zoo" / "retrain_bbbc021.sh"), str(bbbc021), str(out)],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "python -m training.loco --data" in proc.stdout
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["channels"] == ["dna", "tubulin", "actin"] and len(config["classes"]) == 3

    from milcnn import Classifier

    clf = Classifier.from_dir(out / "model", device="cpu")
    sample = next((bbbc021 / "Week1" / "Week1_22123").glob("*wDAPI.tif"))
    image = np.stack([tifffile.imread(str(sample).replace("wDAPI", f"w{s}")) for s in ("DAPI", "Tubulin", "Actin")])
    assert clf.predict(image).top in config["classes"]
