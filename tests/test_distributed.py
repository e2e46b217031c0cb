"""milzoo predict on Dask: a LocalCluster, and a real `dask scheduler` with two `dask worker` processes on
127.0.0.1; outputs equal the local pipeline's, also when a worker is killed or the client is killed and the
run resumed."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")  # the optional extra milcnn-sdk[dask]; the test dependencies have it

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run.json", "report.html", ".milzoo.lock")}


def milzoo(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "milcnn.cli", "predict", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    sample = tifffile.imread(ZOO / "yeast-loc" / "sample_input.tif")
    for i in range(24):
        tifffile.imwrite(folder / f"f{i:02d}.tif", np.roll(sample, 53 * i, axis=2)[:, :256, :])
    (folder / "broken.tif").write_bytes(b"II*\x00 broken")
    return folder


@pytest.fixture(scope="module")
def local(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    proc = milzoo(images, "--out", out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    return snapshot(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A `dask scheduler` and two single-threaded `dask worker` processes (no nanny: a killed worker stays
    dead), all on 127.0.0.1, stopped at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("dask")
    procs = [subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0", "--no-show"],
                              stdout=open(log / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    time.sleep(2)
    for i in range(2):
        procs.append(subprocess.Popen(["dask", "worker", address, "--nthreads", "1", "--no-nanny",
                                       "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                                       "--name", f"w{i}"],
                                      stdout=open(log / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
    yield address, procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def test_a_local_dask_cluster_gives_the_local_outputs(images, local, tmp_path):
    proc = milzoo(images, "--out", tmp_path / "out", "--dask-workers", "2")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path / "out") == local


def test_a_dask_scheduler_with_a_worker_killed_mid_run(images, local, cluster, tmp_path):
    """One worker is SIGKILLed once results arrive: its fields run on the other; nothing lost or doubled."""
    address, procs = cluster
    out = tmp_path / "out"
    proc = milzoo(images, "--out", out, "--scheduler", address)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        rows = (out / "predictions.csv").read_text().count("\n") if (out / "predictions.csv").exists() else 0
        if rows >= 4:
            break
        time.sleep(0.05)
    procs[2].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert snapshot(out) == local


def test_client_killed_then_resumed_without_the_cluster(images, local, tmp_path):
    out = tmp_path / "out"
    proc = milzoo(images, "--out", out, "--dask-workers", "2", start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (out / "predictions.csv").exists() and (out / "predictions.csv").read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its local cluster
    proc.communicate(timeout=60)
    resumed = milzoo(images, "--out", out, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 1, err
    assert snapshot(out) == local


def test_workers_that_cannot_load_the_model_fail_in_one_line():
    from milcnn.batch.distributed import DaskRunner

    with pytest.raises(RuntimeError, match=r"the Dask workers could not load no-such-model: ") as err:
        DaskRunner(model="no-such-model", classes=("a",), workers=1)
    assert "\n" not in str(err.value)


def test_predict_from_python_and_the_lazy_form(images, local, tmp_path):
    from milcnn.batch.distributed import predict, predict_lazy

    assert predict([images], "yeast-loc", out=tmp_path / "out", workers=2) == 1
    assert snapshot(tmp_path / "out") == local
    bag = predict_lazy(sorted(images.glob("f0*.tif"))[:3], "yeast-loc")
    results = bag.compute(scheduler="sync")
    assert [r["image"].rsplit("/", 1)[-1] for r in results] == ["f00.tif", "f01.tif", "f02.tif"]
    assert all(r["mask"].shape == (256, 512) for r in results)


def test_worker_environment_is_what_dask_reads(monkeypatch):
    """The exported form of WORKER_CONFIG gives the same settings when Dask reads it back."""
    import dask
    from milcnn.batch.distributed import WORKER_CONFIG, worker_environment

    for key, value in worker_environment().items():
        monkeypatch.setenv(key, value)
    config = dask.config.collect(paths=[])
    for key, value in WORKER_CONFIG.items():
        assert dask.config.get(key, config=config) == value, key


def test_the_slurm_job_script(monkeypatch):
    """--cluster slurm: one single-process worker per node with all its cores, the shared model cache exported;
    the script is checked, not submitted (there is no sbatch here)."""
    from milcnn.batch.distributed import slurm_cluster

    monkeypatch.setenv("HF_HOME", "/shared/hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cluster = slurm_cluster(cores=8, memory="16GB", walltime="04:00:00", queue="gpu", host="127.0.0.1")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH -t 04:00:00" in lines and "#SBATCH -p gpu" in lines
    assert "export HF_HOME=/shared/hf-cache" in lines and "export HF_HUB_OFFLINE=1" in lines
    assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in lines  # the settings of local clusters
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "tcp://127.0.0.1:" in worker and worker.count("--nthreads 8") == 1


def test_a_scheduler_that_never_answers_fails_in_one_line(monkeypatch):
    """Something listens at the address but sends no Dask handshake: one line after the connect timeout,
    where distributed.Client alone waits for the handshake forever."""
    import threading

    from milcnn.batch import distributed as dask_runner

    monkeypatch.setattr(dask_runner, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        outcome = []

        def connect():
            try:
                dask_runner.DaskRunner(model="yeast-loc", classes=("a",), scheduler=address)
            except Exception as exc:  # noqa: BLE001 - the test reads what came out
                outcome.append(exc)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(60)
    assert not thread.is_alive(), "still waiting for the scheduler after 60 s"
    assert isinstance(outcome[0], RuntimeError) and "\n" not in str(outcome[0])
    assert f"cannot reach the Dask scheduler {address}: no Dask handshake within 2 s" in str(outcome[0])


def test_a_plate_with_controls_gives_the_same_hits_cells_and_report_on_dask(tmp_path, control_plate):
    """Wells from file names, a plate map with roles and --cells: the Dask run writes the same hits.csv,
    plate_qc.csv, wells.csv and cells.csv as the local one, and its report.html."""
    folder, plate_map, _ = control_plate
    outs = {}
    for name, extra in (("local", []), ("dask", ["--dask-workers", "2"])):
        outs[name] = tmp_path / name
        proc = milzoo(folder, "--well-pattern", r"p1_(?P<well>[A-C]\d\d)", "--plate-map", plate_map, "--cells",
                      "--no-overlays", "--out", outs[name], *extra)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0 and "Traceback" not in err, err
    for name in ("hits.csv", "plate_qc.csv", "wells.csv", "cells.csv", "predictions.csv"):
        assert (outs["dask"] / name).read_bytes() == (outs["local"] / name).read_bytes(), name
    assert (outs["dask"] / "report.html").is_file()
