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
               "sample_output.json")


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


# ``-m "not slow"`` gives a quick run while editing; CI (.ci/run) runs every test.
SLOW_FIXTURES = {"hub", "trained", "exported", "real_labelled"}  # a server, a training run, the real sets
SLOW_CALLS = ("subprocess.run(", "subprocess.Popen(", "train(", "train_main(", "finetune(", "loco.main(",
              "learning_curve(", "simulate([")


def pytest_collection_modifyitems(config, items):
    """Mark as ``slow`` the tests that start a subprocess or a server, or train a model."""
    import inspect

    for item in items:
        fn = getattr(item, "function", None)
        try:
            source = inspect.getsource(fn) if fn is not None else ""
        except (OSError, TypeError):
            source = ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or any(call in source for call in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)
