"""The SDK against a real Hub-compatible server (olah on loopback, see hub_server.py).

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, as it does
for users, so each scenario runs the SDK in a fresh process with that environment.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hub_server import OTHER, PINNED, OlahServer, sdk_env
from milcnn import Classifier
from milcnn.model.registry import lookup

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SAMPLE = ZOO / "yeast-loc" / "sample_input.tif"

LOAD_AND_PREDICT = """
import json, sys
from milcnn import Classifier
from milcnn.logs import log_to_stderr
log_to_stderr()  # an application that shows milcnn's messages (a library user sees none by default)
kwargs = json.loads(sys.argv[2])
clf = Classifier.from_hub(sys.argv[1], **kwargs)
image = sys.argv[3] if len(sys.argv) > 3 else str(clf.folder / "sample_input.tif")
pred = clf.predict(image)
print(json.dumps({**clf.origin.to_dict(), "channels": list(clf.channels), "probabilities": pred.probabilities}))
"""


def load_in_process(env, model, *, image=None, **kwargs):
    """from_hub + predict in a fresh process; returns (returncode, parsed stdout or None, stderr)."""
    args = [sys.executable, "-c", LOAD_AND_PREDICT, model, json.dumps(kwargs)] + ([str(image)] if image else [])
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    return proc.returncode, out, proc.stderr


def milzoo(env, *args):
    return subprocess.run([sys.executable, "-m", "milcnn.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("milcnn: ")]


@pytest.mark.slow
def test_download_and_predict_matches_the_local_folder(hub, tmp_path):
    env = sdk_env(hub.endpoint, tmp_path / "hf")
    rc, out, err = load_in_process(env, "milcnn/yeast-loc", image=SAMPLE, revision=PINNED)
    assert rc == 0, err
    assert out["source"] == "hub" and out["commit"] == hub.commits[PINNED]
    assert Path(out["folder"]).is_relative_to(tmp_path / "hf" / "hub")  # HF_HOME is honoured
    assert out["sha256"] == lookup("yeast-loc").sha256  # config.json's record, verified
    local = Classifier.from_dir(ZOO / "yeast-loc", device="cpu").predict(SAMPLE)
    np.testing.assert_allclose([out["probabilities"][c] for c in local.classes],
                               [local.probabilities[c] for c in local.classes], atol=1e-6)
    assert notices(err) == []


@pytest.mark.slow
@pytest.mark.parametrize("revision, channels", [(PINNED, ["gfp", "rfp"]), (OTHER, ["gfp"]), (None, ["gfp"]),
                                                (f"commit:{PINNED}", ["gfp", "rfp"]), (f"commit:{OTHER}", ["gfp"])])
def test_pinned_tags_and_commits(hub, tmp_path, revision, channels):
    if revision and revision.startswith("commit:"):
        revision = hub.commits[revision.split(":")[1]]
    rc, out, err = load_in_process(sdk_env(hub.endpoint, tmp_path / "hf"), "milcnn/yeast-loc", revision=revision)
    assert rc == 0, err
    assert out["channels"] == channels
    assert out["commit"] == hub.commits[PINNED if len(channels) == 2 else OTHER]


@pytest.mark.slow
def test_cache_dir_argument(hub, tmp_path):
    rc, out, err = load_in_process(sdk_env(hub.endpoint, tmp_path / "hf"), "milcnn/yeast-loc", revision=PINNED,
                                   cache_dir=str(tmp_path / "elsewhere"))
    assert rc == 0, err
    assert Path(out["folder"]).is_relative_to(tmp_path / "elsewhere")
    assert not (tmp_path / "hf" / "hub").exists()


def test_zoo_name_uses_the_bundled_copy_without_network(tmp_path):
    env = sdk_env("http://127.0.0.1:9", tmp_path / "hf")  # nothing listens on port 9
    rc, out, err = load_in_process(env, "yeast-loc")
    assert rc == 0, err
    assert out["source"] == "bundled" and out["revision"] == lookup("yeast-loc").revision
    assert notices(err) == [] and not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_zoo_name_at_another_revision_downloads_its_repo(hub, tmp_path):
    rc, out, err = load_in_process(sdk_env(hub.endpoint, tmp_path / "hf"), "yeast-loc", revision=OTHER)
    assert rc == 0, err
    assert out["source"] == "hub" and out["repo_id"] == "milcnn/yeast-loc" and out["channels"] == ["gfp"]


@pytest.mark.slow
def test_unknown_repo(hub, tmp_path):
    proc = milzoo(sdk_env(hub.endpoint, tmp_path / "hf"), "download", "milcnn/no-such-model")
    assert proc.returncode == 2
    assert "Hub repository 'milcnn/no-such-model' not found at " + hub.endpoint in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_unknown_revision(hub, tmp_path):
    proc = milzoo(sdk_env(hub.endpoint, tmp_path / "hf"), "download", "milcnn/yeast-loc@v9.9.9")
    assert proc.returncode == 2
    assert "revision 'v9.9.9' not found in Hub repository 'milcnn/yeast-loc'" in proc.stderr


@pytest.mark.slow
def test_repo_without_a_model(hub, tmp_path):
    proc = milzoo(sdk_env(hub.endpoint, tmp_path / "hf"), "download", "milcnn/not-a-model")
    assert proc.returncode == 2 and "milcnn/not-a-model@main has no config.json: not a milcnn model" in proc.stderr


@pytest.mark.slow
def test_tampered_model_raises_and_deletes_nothing(hub, tmp_path):
    env = sdk_env(hub.endpoint, tmp_path / "hf")
    assert milzoo(env, "download", f"milcnn/yeast-loc@{PINNED}").returncode == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "hf").rglob("*"))
    rc, out, err = load_in_process(env, "milcnn/tampered")
    assert rc != 0 and "ChecksumMismatchError" in err and f"does not match the pinned {lookup('yeast-loc').sha256[:12]}" in err
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "hf").rglob("*"))
    assert set(before) <= set(after)  # the earlier download is all still there
    tampered = list((tmp_path / "hf").rglob("models--milcnn--tampered/snapshots/*/model.onnx"))
    assert len(tampered) == 1  # kept for inspection, not deleted
    # a registry pin is checked too: OTHER's model is not the pinned file
    code = ("from milcnn.model.hub import download; from milcnn.model.registry import lookup; "
            f"download('milcnn/yeast-loc', revision='{OTHER}', expected_sha256=lookup('yeast-loc').sha256)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "ChecksumMismatchError" in proc.stderr


@pytest.mark.slow
def test_stopped_server_uses_the_cache_with_a_notice(hub, tmp_path):
    server = OlahServer(hub.mirror, tmp_path / "olah").start()
    env = sdk_env(server.endpoint, tmp_path / "hf")
    first = milzoo(env, "download", f"milcnn/yeast-loc@{PINNED}")
    assert first.returncode == 0, first.stderr
    server.stop()
    rc, out, err = load_in_process(env, "milcnn/yeast-loc", image=SAMPLE, revision=PINNED)
    assert rc == 0, err
    assert out["source"] == "cache" and out["commit"] == hub.commits[PINNED]
    assert len(notices(err)) == 1 and "unreachable" in notices(err)[0] and "using the cached" in notices(err)[0]
    predicted = milzoo(env, "predict", SAMPLE, "--model", f"milcnn/yeast-loc@{PINNED}", "--out", tmp_path / "out")
    assert predicted.returncode == 0, predicted.stderr
    assert (tmp_path / "out" / "predictions.csv").read_text().count("\n") == 2


@pytest.mark.slow
def test_stopped_server_without_a_cache(hub, tmp_path):
    server = OlahServer(hub.mirror, tmp_path / "olah").start()
    server.stop()
    proc = milzoo(sdk_env(server.endpoint, tmp_path / "hf"), "predict", SAMPLE, "--model", "milcnn/yeast-loc",
                  "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "milcnn/yeast-loc is not in the local cache and the Hub at " + server.endpoint in proc.stderr
    assert "milzoo download milcnn/yeast-loc" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_hf_hub_offline(hub, tmp_path):
    env = sdk_env(hub.endpoint, tmp_path / "hf")
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    proc = milzoo(offline, "download", f"milcnn/yeast-loc@{PINNED}")
    assert proc.returncode == 2 and "HF_HUB_OFFLINE is set" in proc.stderr
    assert milzoo(env, "download", f"milcnn/yeast-loc@{PINNED}").returncode == 0
    rc, out, err = load_in_process(offline, "milcnn/yeast-loc", revision=PINNED)
    assert rc == 0, err
    assert out["source"] == "cache" and notices(err) == [
        f"milcnn: HF_HUB_OFFLINE is set; using the cached milcnn/yeast-loc@{PINNED} (commit {hub.commits[PINNED][:12]})"]
    rc, out, err = load_in_process(offline, "milcnn/yeast-loc", revision=PINNED, local_files_only=True)
    assert rc == 0 and notices(err) == []  # asked for explicitly: no notice


@pytest.mark.slow
def test_predict_with_a_hub_model_equals_the_zoo_name(hub, tmp_path):
    env = sdk_env(hub.endpoint, tmp_path / "hf")
    for model, out in ((f"milcnn/yeast-loc@{PINNED}", "hub"), ("yeast-loc", "zoo")):
        proc = milzoo(env, "predict", SAMPLE, "--model", model, "--out", tmp_path / out)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hub" / "predictions.csv").read_text() == (tmp_path / "zoo" / "predictions.csv").read_text()
    assert (tmp_path / "hub" / "masks" / "sample_input.tif").read_bytes() == \
        (tmp_path / "zoo" / "masks" / "sample_input.tif").read_bytes()


def test_download_of_a_bundled_model_says_so(tmp_path):
    proc = milzoo(sdk_env("http://127.0.0.1:9", tmp_path / "hf"), "download", "yeast-loc")
    assert proc.returncode == 0
    assert "ships with milcnn-sdk, nothing to download; sha256 verified" in proc.stderr
    assert Path(proc.stdout.strip()).name == "yeast-loc"


@pytest.mark.parametrize("name", ["../yeast-loc", "milcnn/../../etc", "a/b/c", "..\\zoo"])
def test_model_names_with_path_tricks_are_refused(tmp_path, name):
    proc = milzoo(sdk_env("http://127.0.0.1:9", tmp_path / "hf"), "download", name)
    assert proc.returncode == 2 and f"unknown model {name!r}" in proc.stderr


@pytest.mark.slow
def test_hub_download_brings_the_int8_and_pooling_files(hub, tmp_path):
    rc, out, err = load_in_process(sdk_env(hub.endpoint, tmp_path / "hf"), "milcnn/yeast-loc", revision=PINNED,
                                   precision="int8")
    assert rc == 0, err
    folder = Path(out["folder"])
    assert (folder / "model.int8.onnx").is_file() and (folder / "pooling.onnx").is_file()


@pytest.mark.slow
def test_milzoo_adapt_takes_a_hub_repo_at_a_revision(hub, tmp_path):
    """``milzoo adapt --model org/name@revision``: the features graph comes down with the model (its weights are
    references into model.onnx beside it in the cache), and the adapted folder predicts."""
    import tifffile

    env = sdk_env(hub.endpoint, tmp_path / "hf")
    sample = tifffile.imread(SAMPLE)
    rows = ["path,label"]
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        tifffile.imwrite(tmp_path / f"crop{i}.tif", sample[:, y:y + 256, x:x + 256], photometric="minisblack")
        rows.append(f"crop{i}.tif,{'vacuole' if i < 2 else 'ER'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    proc = milzoo(env, "adapt", "--model", f"milcnn/yeast-loc@{PINNED}", "--examples", tmp_path / "labels.csv",
                  "--out", tmp_path / "adapted")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "adapted" / "config.json").read_text())
    assert info["training"]["adapted_from"]["name"] == "yeast-loc" and info["channels"] == ["gfp", "rfp"]
    proc = milzoo(env, "predict", tmp_path / "crop0.tif", "--model", tmp_path / "adapted", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
