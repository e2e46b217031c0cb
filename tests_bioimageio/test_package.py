"""bioimage.io packages of the zoo models: `bioimageio test` passes offline, and the package's outputs
equal the SDK's.

bioimageio.core 0.11 needs pydantic < 2.14 and the test extras' ome-zarr-models needs 2.14, so these tests
run in an environment of their own (``pip install ".[bioimageio]"``): where bioimageio.core is not installed
they are skipped here, and ``test_own_environment.py`` builds that environment and runs them in it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from milcnn import Classifier

ZOO = Path(__file__).resolve().parents[1] / "zoo"

pytest.importorskip("bioimageio.core", reason="bioimageio.core runs in its own environment: pip install '.[bioimageio]'")
pytestmark = pytest.mark.slow


def _adapted(folder: Path) -> Path:
    """yeast-loc adapted by ``milcnn.adapt`` on four crops of its sample (two vacuole, two ER)."""
    from milcnn import adapt

    sample = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    crops = [(sample[:, y:y + 256, x:x + 256], "vacuole" if i < 2 else "ER")
             for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)])]
    return adapt("yeast-loc", crops, folder / "yeast-loc-adapted", channel_axis=0)


@pytest.fixture(scope="module", params=["yeast-loc", "yeast-loc-gfp", "mcf7-moa", "yeast-loc-adapted"])
def package(request, tmp_path_factory):
    """(model folder, package): the zoo's, and a folder made by milzoo adapt, packaged as the zoo's are."""
    from training.bioimageio import build_package

    work = tmp_path_factory.mktemp("bioimageio")
    folder = _adapted(work) if request.param == "yeast-loc-adapted" else ZOO / request.param
    return folder, build_package(folder, work / f"{request.param}.zip")


def test_bioimageio_test_passes_offline(package, tmp_path):
    _, path = package
    env = {"BIOIMAGEIO_CACHE_PATH": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "bioimageio.core", "test", str(path)], capture_output=True, text=True,
                          timeout=600, env={**env, "HOME": str(tmp_path), "NO_PROXY": "*", "HTTPS_PROXY": "http://0.0.0.0:9"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "passed" in proc.stdout and "❌" not in proc.stdout


def test_package_outputs_equal_the_sdk(package):
    """The package's own pipeline (its scale_range preprocessing, then the ONNX weights) on an image that is
    not its test tensor gives the SDK's probabilities within 1e-4, and its class maps."""
    from bioimageio.core import load_model_description, predict
    from bioimageio.spec.model.v0_5 import TensorId

    folder, path = package
    descr = load_model_description(path)
    clf = Classifier.from_dir(folder, device="cpu", precision="fp32", backend="onnxruntime")
    sample = clf.prepare(tifffile.imread(folder / "sample_input.tif"))[0]
    image = np.ascontiguousarray(np.roll(sample, 77, axis=2)[:, :320, :256])  # another field of view
    out = predict(model=descr, inputs={TensorId("image"): image.astype(np.float32)[None]})
    pred = clf.predict(image, cell_diameter=clf.info.cell_diameter)  # at the model's scale, as the package runs
    sdk = np.array([pred.probabilities[c] for c in clf.classes])
    np.testing.assert_allclose(out.members[TensorId("probabilities")].data.values[0], sdk, atol=1e-4)
    np.testing.assert_allclose(out.members[TensorId("class_maps")].data.values[0], pred.maps, atol=1e-4)
    kwargs = next(p.kwargs for p in descr.inputs[0].preprocessing if p.id == "scale_range")  # the model's percentiles
    assert (kwargs.min_percentile, kwargs.max_percentile) == (clf.info.normalization.low, clf.info.normalization.high)
    assert [str(c) for c in descr.inputs[0].axes[1].channel_names] == list(clf.channels)
