"""Resolve a model name to a local folder: the bundled zoo copy, or a Hugging Face Hub download."""

from __future__ import annotations

import re
from pathlib import Path

from milcnn import constants
from milcnn.errors import ChecksumMismatchError, ModelNotFoundError
from milcnn.registry import lookup, sha256_of, zoo

__all__ = ["resolve", "parse_model_spec"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HUB_FILES = (constants.CONFIG_FILE, constants.MODEL_FILE, constants.CARD_FILE,
              constants.SAMPLE_INPUT_FILE, constants.SAMPLE_OUTPUT_FILE)


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``name``, ``org/name`` or ``org/name@revision`` -> (name, revision)."""
    name, sep, revision = spec.partition("@")
    return name, (revision or None) if sep else None


def resolve(name_or_repo: str, *, revision: str | None = None) -> tuple[Path, str | None]:
    """The folder holding the model and the sha256 its ``model.onnx`` must have (None if unknown).

    Raises:
        ModelNotFoundError: not a zoo name, an ``org/name`` repo id, or a folder.
        ChecksumMismatchError: a download differs from the registry's checksum.
    """
    if Path(name_or_repo).is_dir():
        return Path(name_or_repo), None
    if "/" not in name_or_repo and "\\" not in name_or_repo and ".." not in name_or_repo:
        entry = lookup(name_or_repo)
        if revision in (None, entry.revision):
            bundled = entry.bundled_dir
            if bundled is not None and sha256_of(bundled / constants.MODEL_FILE) == entry.sha256:
                return bundled, entry.sha256
            return _download(entry.repo_id, entry.revision, expected_sha256=entry.sha256), entry.sha256
        return _download(entry.repo_id, revision, expected_sha256=None), None
    if not _REPO_ID.match(name_or_repo) or ".." in name_or_repo:
        raise ModelNotFoundError(name_or_repo, sorted(zoo()))
    return _download(name_or_repo, revision, expected_sha256=None), None


def _download(repo_id: str, revision: str | None, *, expected_sha256: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    folder = None
    for filename in _HUB_FILES:
        try:
            path = Path(hf_hub_download(repo_id, filename, revision=revision))
        except Exception:
            if filename in (constants.CONFIG_FILE, constants.MODEL_FILE):
                raise
            continue
        folder = path.parent
    if expected_sha256 is not None:
        actual = sha256_of(folder / constants.MODEL_FILE)
        if actual != expected_sha256:
            raise ChecksumMismatchError(folder / constants.MODEL_FILE, expected_sha256, actual)
    return folder
