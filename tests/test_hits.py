"""Hits from plates with controls: the plate map's role column, hits.csv and plate_qc.csv."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from milcnn.cli import main
from milcnn.errors import PlateMapError
from milcnn.outputs.hits import MIN_NEGATIVE_CONTROLS, call_hits
from milcnn.outputs.plates import read_plate_map

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("a", "b", "ctrl")


def well(w, p, area, qc="ok", plate="p1"):
    return {"plate": plate, "well": w, "fields": 1, "qc": qc, **{f"p_{c}": v for c, v in zip(CLASSES, p)},
            **{f"area_{c}": v for c, v in zip(CLASSES, area)}}


def plate_map(roles: dict) -> dict:
    return {("", w): {"compound": w, "concentration": 1.0, "moa": "", "role": r} for w, r in roles.items()}


def a_plate(rng, n_neg=8):
    """Negative controls near (0, 0, 1); positive controls and one active well called 'a' with cells marked;
    one sample pooled to 'b' with no cell marked for it (an untreated field the pooling got wrong); quiet samples."""
    table, roles = [], {}
    for i in range(n_neg):
        table.append(well(f"A{i + 1:02d}", (0.01, 0.01, 0.98) + rng.normal(0, 0.005, 3), (0, 0, 0.01)))
        roles[f"A{i + 1:02d}"] = "negative_control"
    for i in range(4):
        table.append(well(f"B{i + 1:02d}", (0.95 - 0.02 * i, 0.0, 0.05 + 0.02 * i), (0.1, 0, 0.0)))
        roles[f"B{i + 1:02d}"] = "positive_control"
    table.append(well("C01", (0.9, 0.0, 0.1), (0.2, 0, 0.0)))
    table.append(well("C02", (0.0, 0.9, 0.1), (0.0, 0.0, 0.01)))
    for i in range(20):
        table.append(well(f"D{i + 1:02d}", (0.02, 0.01, 0.97) + rng.normal(0, 0.005, 3), (0, 0, 0.01)))
    roles.update({"C01": "sample", "C02": "sample", **{f"D{i + 1:02d}": "sample" for i in range(20)}})
    return table, roles


def test_an_active_well_is_a_hit_and_a_pooled_call_without_marked_cells_is_not():
    table, roles = a_plate(np.random.default_rng(0))
    found = call_hits(table, plate_map(roles), CLASSES)
    hits = {h["well"]: h for h in found.hits}
    assert hits["C01"]["hit"] and hits["C01"]["class"] == "a" and hits["C01"]["q_value"] < 1e-6
    assert not hits["C02"]["hit"] and hits["C02"]["score"] == 0.0  # probability moved, no mask grew
    assert sum(h["hit"] for h in found.hits) == 1 and len(found.hits) == 22
    qs = [h["q_value"] for h in found.hits]
    assert qs == sorted(qs) and all(0 <= q <= 1 for q in qs)  # sorted by q; BH keeps them in [0, 1]
    (qc,) = found.plates
    assert qc["negative_controls"] == 8 and qc["positive_controls"] == 4 and qc["z_prime"] > 0.5
    assert qc["hit_calling"] == "done" and not found.notices


def test_a_plate_with_too_few_negative_controls_is_skipped_in_one_line_and_the_others_scored():
    rng = np.random.default_rng(1)
    good, roles = a_plate(rng)
    poor, poor_roles = a_plate(rng, n_neg=MIN_NEGATIVE_CONTROLS - 1)
    for row in poor:
        row["plate"] = "p2"
    mapping = {**plate_map(roles)}
    mapping.update({("p2", w): {**e, "role": poor_roles[w]} for (_, w), e in plate_map(poor_roles).items()})
    found = call_hits(good + poor, mapping, CLASSES)
    assert found.notices == [f"milzoo: plate p2: no hit calling, {MIN_NEGATIVE_CONTROLS - 1} negative control well(s) "
                             f"with a field that passed qc, fewer than {MIN_NEGATIVE_CONTROLS}"]
    assert {p["plate"]: p["hit_calling"] == "done" for p in found.plates} == {"p1": True, "p2": False}
    assert all(h["score"] is None for h in found.hits if h["plate"] == "p2")
    assert any(h["hit"] for h in found.hits if h["plate"] == "p1")


@pytest.mark.parametrize("text, says", [
    ("well,compound,concentration,role\nA01,DMSO,0,negative\n", "line 2, column role: 'negative' is not one of"),
    ("well,compound,concentration,role\nA01,DMSO,0,\n", "line 2: no role"),
])
def test_a_bad_role_is_one_line_naming_the_line_and_column(tmp_path, text, says):
    path = tmp_path / "map.csv"
    path.write_text(text)
    with pytest.raises(PlateMapError, match=says) as err:
        read_plate_map(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_milzoo_writes_hits_and_plate_qc_from_a_map_with_roles_and_a_notice_without(tmp_path, control_plate):
    """Identical-looking wells: hits.csv and plate_qc.csv with roles, no hit; without the role column, one notice
    and no hit list."""
    folder, with_roles, roles = control_plate
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(folder), "--well-pattern", r"p1_(?P<well>[A-C]\d\d)",
                                       "--plate-map", str(with_roles), "--out", str(out), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert "hit(s) at q <= 0.05 among 6 sample wells" in result.output
    hits = list(csv.DictReader(open(out / "hits.csv")))
    assert len(hits) == 6 and {h["well"] for h in hits} == {w for w, r in roles.items() if r == "sample"}
    assert not any(h["hit"] == "True" for h in hits)
    (qc,) = list(csv.DictReader(open(out / "plate_qc.csv")))
    assert qc["negative_controls"] == "3" and qc["positive_controls"] == "3" and qc["hit_calling"] == "done"
    plain = tmp_path / "plain.csv"
    plain.write_text("well,compound,concentration\n" + "".join(f"{w},c{w},1\n" for w in roles))
    shutil.rmtree(out)
    result = CliRunner().invoke(main, ["predict", str(folder), "--well-pattern", r"p1_(?P<well>[A-C]\d\d)",
                                       "--plate-map", str(plain), "--out", str(out), "--no-overlays"])
    assert result.exit_code == 0 and "the plate map has no role column" in result.output
    assert not (out / "hits.csv").exists() and (out / "treatments.csv").exists()
