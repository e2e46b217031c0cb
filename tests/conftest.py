from pathlib import Path
from types import SimpleNamespace

import pytest

from training.data.yeast import YeastParams
from training.simulate import simulate_dataset


@pytest.fixture(scope="session")
def tiny_yeast(tmp_path_factory) -> Path:
    """22 simulated 128 x 128 yeast images (two per class) with masks and a manifest."""
    out = tmp_path_factory.mktemp("tiny_yeast")
    return simulate_dataset("yeast", n=22, seed=5, out=out, params=YeastParams(size=128), workers=1)


@pytest.fixture(scope="session")
def clf():
    """``yeast-loc`` on the CPU at fp32 (its default there), loaded once for the session: tests that change
    it (monkeypatch aside) load their own."""
    from milcnn import Classifier

    return Classifier.from_hub("yeast-loc", device="cpu")


@pytest.fixture(scope="session")
def exported(tiny_yeast, tmp_path_factory):
    """One tiny model trained for a few steps on ``tiny_yeast`` and exported as a zoo folder:
    (its best.pt, the folder)."""
    from training.export import export_folder
    from training.train import TrainConfig, train

    run = tmp_path_factory.mktemp("export_run")
    cfg = TrainConfig(data=str(tiny_yeast), val=str(tiny_yeast), out=str(run), channels="gfp,rfp", epochs=1,
                      steps_per_epoch=3, batch_size=4, crop=64, width=4, seed=1, threads=2)
    best = train(cfg, progress=False)
    out = export_folder(best, run / "zoo" / "tiny", name="tiny", version="0.0.1", eval_data=str(tiny_yeast),
                        training_data={"simulated": True, "description": "22 tiny images"})
    return best, out


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real microscopy images in ../shared/realdata (see its README)."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
    if not path.is_dir():
        pytest.fail(f"real test images not found at {path}")
    return path


@pytest.fixture(scope="session")
def real_labelled() -> Path:
    """The real labelled cells in ../shared/realdata-labelled (see its README)."""
    from training.data.real import DEFAULT_REAL_DATA

    if not DEFAULT_REAL_DATA.is_dir():
        pytest.fail(f"real labelled cells not found at {DEFAULT_REAL_DATA}")
    return DEFAULT_REAL_DATA


ZOO = Path(__file__).resolve().parents[1] / "zoo"
MODEL_FILES = ("config.json", "model.onnx", "model.int8.onnx", "pooling.onnx", "README.md", "sample_input.tif",
               "sample_output.json", "model.features.onnx")


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A real Hub-compatible server (olah, offline) on loopback over git mirrors made from exported folders.

    ``milcnn/yeast-loc``: tag ``PINNED`` (the registry's revision) = the released zoo/yeast-loc folder, then tag
    ``OTHER`` (= main) = zoo/yeast-loc-gfp. ``milcnn/tampered``: config.json pins the sha256 of yeast-loc's
    model.onnx, whose bytes were changed.
    ``milcnn/not-a-model``: a README only.
    """
    from hub_server import OTHER, PINNED, HubMirror, OlahServer

    root = tmp_path_factory.mktemp("hub")
    mirror = HubMirror(root / "mirrors")
    v1 = mirror.commit("milcnn/yeast-loc", {f: ZOO / "yeast-loc" / f for f in MODEL_FILES},
                       message=f"yeast-loc {PINNED}", tag=PINNED)
    v2 = mirror.commit("milcnn/yeast-loc", {f: ZOO / "yeast-loc-gfp" / f for f in MODEL_FILES},
                       message=f"yeast-loc {OTHER} (one channel)", tag=OTHER)
    onnx = bytearray((ZOO / "yeast-loc" / "model.onnx").read_bytes())
    onnx[-100] ^= 0xFF
    mirror.commit("milcnn/tampered", {"config.json": ZOO / "yeast-loc" / "config.json", "model.onnx": bytes(onnx)},
                  message="tampered", tag="v1.0.0")
    mirror.commit("milcnn/not-a-model", {"README.md": b"# not a model\n"}, message="readme")
    server = OlahServer(mirror, root / "olah").start()
    yield SimpleNamespace(endpoint=server.endpoint, mirror=mirror, server=server, commits={PINNED: v1, OTHER: v2})
    server.stop()


# Markers are explicit on each test (pyproject.toml lists them); these fixtures imply them, and collection
# stops where a test uses one without its marker, so none is forgotten.
SLOW_FIXTURES = {"hub", "trained", "exported", "real_labelled"}  # a server, a training run, the real sets
REALDATA_FIXTURES = {"realdata", "real_labelled"}
#: set by .ci/run: a test that needs ../shared fails where the data is missing instead of being skipped
REQUIRE_REALDATA = "MILCNN_REQUIRE_REALDATA"


def _shared_data_missing() -> str | None:
    from training.data.real import DEFAULT_REAL_DATA

    for path in (DEFAULT_REAL_DATA, DEFAULT_REAL_DATA.parent / "realdata"):
        if not path.is_dir():
            return f"real images not found at {path} (this project's ../shared)"
    return None


def _openvino_missing() -> str | None:
    from milcnn.runtime.openvino import OPENVINO_HINT, openvino_available

    return None if openvino_available() else f"openvino is not installed ({OPENVINO_HINT})"


def pytest_collection_modifyitems(config, items):
    """Check the markers against the fixtures, then skip what this machine cannot run, each with its reason."""
    forgot = [f"{item.nodeid}: uses {', '.join(sorted(fixtures & set(item.fixturenames)))} without @pytest.mark.{mark}"
              for item in items for fixtures, mark in ((SLOW_FIXTURES, "slow"), (REALDATA_FIXTURES, "needs_realdata"))
              if fixtures & set(getattr(item, "fixturenames", ())) and item.get_closest_marker(mark) is None]
    if forgot:
        raise pytest.UsageError("tests without their markers:\n" + "\n".join(forgot))
    import os

    reasons = {"needs_realdata": None if os.environ.get(REQUIRE_REALDATA) else _shared_data_missing(),
               "needs_openvino": _openvino_missing()}
    for item in items:
        for mark, reason in reasons.items():
            if reason and item.get_closest_marker(mark) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def control_plate(tmp_path_factory):
    """A 3 x 4 plate of the yeast sample's crops, one field per well named ``p1_<well>.tif`` (the same look
    everywhere), and its plate map with roles: column 1 negative controls, column 2 positive, the rest samples
    (compounds named ``<b>c<well></b>``, markup a page must show as text). Returns (folder, map, roles)."""
    import numpy as np
    import tifffile

    root = tmp_path_factory.mktemp("control-plate")
    sample = tifffile.imread(Path(__file__).resolve().parents[1] / "zoo" / "yeast-loc" / "sample_input.tif")
    folder = root / "plate"
    folder.mkdir()
    wells = [f"{r}{c:02d}" for r in "ABC" for c in range(1, 5)]
    for i, w in enumerate(wells):
        tifffile.imwrite(folder / f"p1_{w}.tif", np.roll(sample, 16 * i, axis=2)[:, :256, :256],
                         photometric="minisblack")
    roles = {w: "negative_control" if w.endswith("01") else "positive_control" if w.endswith("02") else "sample"
             for w in wells}
    plate_map = root / "map.csv"
    plate_map.write_text("well,compound,concentration,role\n" + "".join(f"{w},<b>c{w}</b>,1,{r}\n"
                                                                        for w, r in roles.items()))
    return folder, plate_map, roles

