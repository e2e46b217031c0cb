"""The zoo: released models by name, each pinned to a Hub repo, a revision and a checksum.

The registry (``registry.json``) and the released folders ship inside the wheel, in the
``milcnn.zoo`` package (the repository's ``zoo/`` folder).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from milcnn.errors import ModelNotFoundError

__all__ = ["ZooEntry", "zoo", "lookup", "read_registry", "write_registry", "REGISTRY_FILE"]

REGISTRY_FILE = "registry.json"


@dataclass(frozen=True)
class ZooEntry:
    """One released model (an entry of ``registry.json``). Source: repo_id, revision. Integrity: sha256 of
    model.onnx and config_sha256 of config.json."""

    name: str
    repo_id: str
    revision: str
    sha256: str
    summary: str = ""
    config_sha256: str | None = None

    @property
    def bundled_dir(self) -> Path | None:
        """The copy inside the installed package, if it ships one."""
        path = Path(str(resources.files("milcnn.zoo"))) / self.name
        return path if (path / "model.onnx").is_file() else None

    def to_dict(self) -> dict:
        return asdict(self)


def _entries(text: str) -> dict[str, ZooEntry]:
    return {name: ZooEntry(name=name, **entry) for name, entry in json.loads(text)["models"].items()}


def zoo() -> dict[str, ZooEntry]:
    """Every registered model, by name (the registry inside the installed package)."""
    return _entries(resources.files("milcnn.zoo").joinpath(REGISTRY_FILE).read_text(encoding="utf-8"))


def read_registry(path) -> dict[str, ZooEntry]:
    """A ``registry.json`` file (empty where there is none yet): the one reader of the format."""
    path = Path(path)
    return _entries(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_registry(path, entries: dict[str, ZooEntry]) -> None:
    """Write ``registry.json`` atomically, models sorted by name: the one writer of the format."""
    from milcnn.io.images import write_atomic

    models = {name: {k: v for k, v in e.to_dict().items() if k != "name"} for name, e in sorted(entries.items())}
    with write_atomic(Path(path), "w") as fh:
        fh.write(json.dumps({"models": models}, indent=2) + "\n")


def lookup(name: str) -> ZooEntry:
    """The entry for ``name``; raises ModelNotFoundError (a KeyError) listing the zoo."""
    models = zoo()
    if name not in models:
        raise ModelNotFoundError(name, sorted(models))
    return models[name]
