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

__all__ = ["ZooEntry", "zoo", "lookup"]


@dataclass(frozen=True)
class ZooEntry:
    """One released model. Source: repo_id, revision. Integrity: sha256 of model.onnx."""

    name: str
    repo_id: str
    revision: str
    sha256: str
    summary: str = ""

    @property
    def bundled_dir(self) -> Path | None:
        """The copy inside the installed package, if it ships one."""
        path = Path(str(resources.files("milcnn.zoo"))) / self.name
        return path if (path / "model.onnx").is_file() else None

    def to_dict(self) -> dict:
        return asdict(self)


def zoo() -> dict[str, ZooEntry]:
    """Every registered model, by name."""
    text = resources.files("milcnn.zoo").joinpath("registry.json").read_text(encoding="utf-8")
    return {name: ZooEntry(name=name, **entry) for name, entry in json.loads(text)["models"].items()}


def lookup(name: str) -> ZooEntry:
    """The entry for ``name``; raises ModelNotFoundError (a KeyError) listing the zoo."""
    models = zoo()
    if name not in models:
        raise ModelNotFoundError(name, sorted(models))
    return models[name]
