"""A real Hugging Face-compatible server for the tests: olah, offline, serving local git mirrors.

``HubMirror`` builds ``<root>/mirrors/models/<org>/<name>`` git repositories (branch ``main``,
one tag per release) and ``OlahServer`` runs ``olah-cli`` on a free loopback port over them.
Clients reach it the way users reach the Hub: ``HF_ENDPOINT=http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: the hub fixture's tags of milcnn/yeast-loc: the registry's pinned revision (the released zoo folder), and
#: a later one holding another model (so a pin can be checked against it)
PINNED = json.loads((Path(__file__).resolve().parents[1] / "zoo" / "registry.json").read_text())[
    "models"]["yeast-loc"]["revision"]
OTHER = "v99.0.0-one-channel"
from types import SimpleNamespace

_GIT = ["git", "-c", "user.name=milcnn tests", "-c", "user.email=tests@milcnn.invalid", "-c", "commit.gpgsign=false",
        "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*_GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class HubMirror:
    """Git repositories in the layout olah serves as local mirrors."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / "models" / repo_id

    def init(self, repo_id: str) -> Path:
        path = self.repo_dir(repo_id)
        if not (path / ".git").is_dir():
            path.mkdir(parents=True, exist_ok=True)
            git(path, "init", "-q", "-b", "main")
        return path

    def commit(self, repo_id: str, files: dict[str, Path | bytes], *, message: str, tag: str | None = None,
               replace: bool = True) -> str:
        """Commit ``files`` (name -> source path or bytes) to ``main``; returns the commit sha."""
        path = self.init(repo_id)
        if replace:
            for old in path.iterdir():
                if old.name != ".git":
                    old.unlink()
        for name, content in files.items():
            target = path / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", message)
        if tag:
            git(path, "tag", tag)
        return git(path, "rev-parse", "HEAD")

    def tags(self, repo_id: str) -> list[str]:
        path = self.repo_dir(repo_id)
        return git(path, "tag").split() if (path / ".git").is_dir() else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OlahServer:
    """``olah-cli`` in offline mode over a ``HubMirror``; ``start()``/``stop()`` may be called again."""

    def __init__(self, mirror: HubMirror, workdir: Path):
        self.mirror = mirror
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.config = self.workdir / "olah.toml"
        self.config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirror.root}"]\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n"
        )

    def start(self, timeout: float = 60.0) -> "OlahServer":
        olah = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
        log = open(self.workdir / "olah.log", "ab")
        self.process = subprocess.Popen([olah, "-c", str(self.config)], cwd=self.workdir, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited with {self.process.returncode}; see {self.workdir / 'olah.log'}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/api/whoami-v2", timeout=1):
                    return self
            except urllib.error.HTTPError:
                return self  # it answers: up
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"olah did not start within {timeout} s; see {self.workdir / 'olah.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class RecordingHfApi:
    """A stand-in for ``huggingface_hub.HfApi`` for the push path (olah accepts no uploads).

    Every call is checked against the real ``HfApi`` method's signature and recorded; uploads
    and tags land as commits and tags in a ``HubMirror``, so what was pushed can then be
    downloaded back through a real server.
    """

    def __init__(self, mirror: HubMirror):
        self.mirror = mirror
        self.calls: list[tuple[str, dict]] = []

    def _record(self, method: str, *args, **kwargs) -> dict:
        from huggingface_hub import HfApi

        bound = inspect.signature(getattr(HfApi, method)).bind(None, *args, **kwargs)  # TypeError if misused
        arguments = dict(bound.arguments)
        arguments.pop("self")
        self.calls.append((method, arguments))
        return arguments

    def create_repo(self, *args, **kwargs):
        a = self._record("create_repo", *args, **kwargs)
        self.mirror.init(a["repo_id"])
        return SimpleNamespace(repo_id=a["repo_id"])

    def list_repo_refs(self, *args, **kwargs):
        from huggingface_hub import errors

        a = self._record("list_repo_refs", *args, **kwargs)
        if not (self.mirror.repo_dir(a["repo_id"]) / ".git").is_dir():
            url = f"https://hub.invalid/api/models/{a['repo_id']}/refs"
            raise errors.RepositoryNotFoundError(f"404: {a['repo_id']} not found", response=_response(404, url))
        return SimpleNamespace(tags=[SimpleNamespace(name=t) for t in self.mirror.tags(a["repo_id"])])

    def upload_folder(self, *args, **kwargs):
        a = self._record("upload_folder", *args, **kwargs)
        files = {p.name: p for p in Path(a["folder_path"]).iterdir() if p.is_file()}
        sha = self.mirror.commit(a["repo_id"], files, message=a.get("commit_message") or "upload", replace=False)
        return SimpleNamespace(oid=sha, commit_url=f"mirror://{a['repo_id']}/commit/{sha}")

    def create_tag(self, *args, **kwargs):
        a = self._record("create_tag", *args, **kwargs)
        git(self.mirror.repo_dir(a["repo_id"]), "tag", a["tag"], a.get("revision") or "HEAD")


def _response(status: int, url: str):
    """An HTTP response object of the client library huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    import importlib

    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.Response(status, request=module.Request("GET", url))
    raise ImportError("neither httpx2 nor httpx is installed")


def sdk_env(endpoint: str, hf_home: Path, **extra: str) -> dict:
    """The environment of a user pointing the SDK at ``endpoint`` with cache ``hf_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env
