"""Find a model's folder: a local folder, the copy bundled with the package, or the Hugging Face Hub.

Downloads go through ``huggingface_hub`` into the standard Hugging Face cache, so ``HF_ENDPOINT``,
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` and ``HF_HUB_ETAG_TIMEOUT`` work as
they do for every Hub library. When the Hub cannot be reached, a cached copy is used with a
one-line notice. ``model.onnx`` is checked against its sha256 wherever one is known (the zoo
registry, or the ``files`` record of the model's own ``config.json``); a mismatch raises and
deletes nothing.
"""

from __future__ import annotations

import logging
import importlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from milcnn import constants
from milcnn.model.checksums import verify_sha256
from milcnn.errors import (ChecksumMismatchError, HubOfflineError, ModelConfigError, ModelNotFoundError,
                           RepositoryNotFoundError, RevisionNotFoundError, one_line)
from milcnn.model.registry import lookup, zoo

__all__ = ["ResolvedModel", "resolve", "download", "parse_model_spec", "model_sha256", "is_repo_id"]

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REQUIRED_FILES = (constants.CONFIG_FILE, constants.MODEL_FILE)
_OPTIONAL_FILES = (constants.POOLING_FILE, constants.INT8_MODEL_FILE, constants.FP16_MODEL_FILE,
                   constants.CARD_FILE, constants.SAMPLE_INPUT_FILE, constants.SAMPLE_OUTPUT_FILE,
                   constants.FEATURES_FILE)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model was found.

    Attributes:
        folder: holds ``model.onnx`` and ``config.json``.
        sha256: the checksum ``model.onnx`` must have (None if nothing pins it).
        source: ``folder`` (a path given), ``bundled`` (shipped in the package), ``hub``
            (checked against the Hub just now) or ``cache`` (the Hub was not asked or not reachable).
        repo_id, revision, commit: the Hub repository, the revision asked for and the commit it
            resolved to (None for a local folder).
        config_sha256: the checksum ``config.json`` must have (a registry pin; None where nothing pins it
            beyond the file's own ``checksum``).
    """

    folder: Path
    sha256: str | None
    source: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    config_sha256: str | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``name``, ``org/name`` or ``org/name@revision`` -> (name, revision)."""
    name, sep, revision = spec.partition("@")
    return name, (revision or None) if sep else None


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a Hub repo id ``org/name`` (no other separators, no ``..``)."""
    return bool(_REPO_ID.match(text)) and ".." not in text


def model_sha256(folder) -> str | None:
    """The sha256 of ``model.onnx`` that the folder's ``config.json`` records, if it records one."""
    from milcnn.model.config import ModelInfo

    try:
        return ModelInfo.from_file(Path(folder) / constants.CONFIG_FILE).file_sha256(constants.MODEL_FILE)
    except ModelConfigError:
        return None


def resolve(name_or_repo: str, *, revision: str | None = None, cache_dir=None, local_files_only: bool = False,
            force_download: bool = False) -> ResolvedModel:
    """Find the folder of a model given as a folder path, a zoo name or a Hub repo id.

    Args:
        name_or_repo: a folder, a zoo name (``"yeast-loc"``) or a Hub repo id (``"org/name"``); a name or repo
            may carry its revision, ``"org/name@v1.0.0"`` (``parse_model_spec``), as ``--model`` takes it.
        revision: a branch, tag or commit (over one in ``name_or_repo``); for a zoo name, None means the
            registry's pinned revision.
        cache_dir: the Hugging Face cache to use instead of the default (``HF_HUB_CACHE``).
        local_files_only: never contact the Hub; use the cache.
        force_download: download again even if cached.

    Returns:
        ResolvedModel.

    Raises:
        ModelNotFoundError: not a folder, a zoo name or a valid ``org/name`` (lists the zoo).
        RepositoryNotFoundError, RevisionNotFoundError: the Hub has no such repo or revision.
        HubOfflineError: offline or unreachable, and nothing usable in the cache.
        ChecksumMismatchError: ``model.onnx`` differs from its pinned sha256.
        ModelConfigError: the repo is not a milcnn model folder.
    """
    name_or_repo = str(name_or_repo)
    if Path(name_or_repo).is_dir():
        return ResolvedModel(Path(name_or_repo), model_sha256(name_or_repo), "folder")
    name_or_repo, spec_revision = parse_model_spec(name_or_repo)
    revision = revision or spec_revision
    if "/" not in name_or_repo and "\\" not in name_or_repo and ".." not in name_or_repo:
        entry = lookup(name_or_repo)
        if revision in (None, entry.revision):
            bundled = entry.bundled_dir
            if bundled is not None:
                try:
                    verify_sha256(bundled / constants.MODEL_FILE, entry.sha256)
                    verify_sha256(bundled / constants.CONFIG_FILE, entry.config_sha256)
                    return ResolvedModel(bundled, entry.sha256, "bundled", entry.repo_id, entry.revision,
                                         config_sha256=entry.config_sha256)
                except ChecksumMismatchError:
                    pass
                log.warning(f"the bundled copy of {entry.name} ({bundled}) does not match the registry's sha256 pins; "
                       f"fetching {entry.repo_id}@{entry.revision} from the Hub instead")
            return download(entry.repo_id, revision=entry.revision, cache_dir=cache_dir,
                            local_files_only=local_files_only, force_download=force_download,
                            expected_sha256=entry.sha256, expected_config_sha256=entry.config_sha256)
        return download(entry.repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                        force_download=force_download)
    if not is_repo_id(name_or_repo):
        raise ModelNotFoundError(name_or_repo, sorted(zoo()))
    return download(name_or_repo, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                    force_download=force_download)


def download(repo_id: str, *, revision: str | None = None, cache_dir=None, local_files_only: bool = False,
             force_download: bool = False, expected_sha256: str | None = None,
             expected_config_sha256: str | None = None) -> ResolvedModel:
    """Fetch a model folder from the Hub into the Hugging Face cache (or find it there).

    The Hub is asked first which commit ``revision`` is; if it cannot be reached (or
    ``HF_HUB_OFFLINE`` is set) the cached copy of that revision is used, with a notice.

    Args:
        repo_id: ``org/name``.
        revision: branch, tag or commit (default ``main``).
        cache_dir: the Hugging Face cache to use instead of the default.
        local_files_only: use the cache only, without a notice.
        force_download: download again even if cached.
        expected_sha256: the checksum ``model.onnx`` must have; defaults to the one its
            ``config.json`` records.
        expected_config_sha256: the checksum ``config.json`` must have (a registry pin), if any.

    Returns:
        ResolvedModel with source ``hub`` or ``cache``.

    Raises:
        RepositoryNotFoundError, RevisionNotFoundError, HubOfflineError, ChecksumMismatchError,
        ModelConfigError: see ``resolve``.
    """
    from huggingface_hub import constants as hf_constants

    endpoint = hf_constants.ENDPOINT
    offline_reason = None
    commit = None
    if local_files_only:
        offline_reason = "local_files_only was asked for"
    elif hf_constants.is_offline_mode():
        offline_reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            commit = _remote_commit(repo_id, revision, endpoint)
        except _Unreachable as exc:
            offline_reason = f"the Hub at {endpoint} is unreachable ({exc})"
    kwargs = {"revision": revision, "cache_dir": None if cache_dir is None else str(cache_dir)}
    if offline_reason is not None:
        folder = _fetch(repo_id, **kwargs, local_files_only=True, offline_reason=offline_reason)
        if not local_files_only:
            log.warning(f"{offline_reason}; using the cached {repo_id}@{revision or 'main'} (commit {folder.name[:12]})")
        source = "cache"
    else:
        folder = _fetch(repo_id, **kwargs, force_download=force_download)
        if folder.name != commit:
            raise ModelConfigError(f"{repo_id}@{revision or 'main'} moved to a new commit during the download "
                                   f"({commit[:12]} -> {folder.name[:12]}); run it again")
        source = "hub"
    sha256 = expected_sha256 or model_sha256(folder)
    verify_sha256(folder / constants.MODEL_FILE, sha256)
    verify_sha256(folder / constants.CONFIG_FILE, expected_config_sha256)
    return ResolvedModel(folder, sha256, source, repo_id, revision, folder.name, expected_config_sha256)


class _Unreachable(Exception):
    """The Hub did not answer (connection refused, timeout, proxy or 5xx)."""


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import OfflineModeIsEnabled

    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    # huggingface_hub 1.x speaks httpx, 2.x httpx2, 0.x requests: accept whichever is installed.
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _remote_commit(repo_id: str, revision: str | None, endpoint: str) -> str:
    """The commit sha ``revision`` points to on the Hub; typed errors for what is not there."""
    from huggingface_hub import HfApi
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import errors as hf_errors

    api = HfApi()
    timeout = hf_constants.HF_HUB_ETAG_TIMEOUT
    try:
        try:
            # hf_hub_download's default revision is main, so ask for main, not the repo's default branch
            return api.model_info(repo_id, revision=revision or "main", timeout=timeout).sha
        except hf_errors.RevisionNotFoundError:
            raise RevisionNotFoundError(repo_id, revision, endpoint) from None
        except hf_errors.RepositoryNotFoundError:
            # Some servers answer "repository not found" for an unknown revision of a known repo.
            if revision is None:
                raise RepositoryNotFoundError(repo_id, endpoint) from None
            try:
                api.list_repo_refs(repo_id)
            except hf_errors.HfHubHTTPError as exc:
                if _status(exc) is None or _status(exc) < 500:
                    raise RepositoryNotFoundError(repo_id, endpoint) from None
                raise
            raise RevisionNotFoundError(repo_id, revision, endpoint) from None
    except hf_errors.HfHubHTTPError as exc:
        if (_status(exc) or 0) >= 500:
            raise _Unreachable(f"HTTP {_status(exc)}") from None
        raise
    except _network_errors() as exc:
        raise _Unreachable(one_line(exc, limit=300)) from None


def _fetch(repo_id: str, *, revision: str | None, cache_dir: str | None, local_files_only: bool = False,
           force_download: bool = False, offline_reason: str | None = None) -> Path:
    """Download (or find in the cache) the model files of one revision; returns their snapshot folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    at = f"{repo_id}@{revision or 'main'}"
    folders = set()
    for filename in _REQUIRED_FILES + _OPTIONAL_FILES:
        try:
            path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                        local_files_only=local_files_only, force_download=force_download))
        except hf_errors.LocalEntryNotFoundError:
            if filename in _OPTIONAL_FILES:
                continue
            raise HubOfflineError(repo_id, revision, offline_reason or "the Hub was not asked") from None
        except (hf_errors.EntryNotFoundError, hf_errors.RepositoryNotFoundError):
            # The repo and revision exist (checked before): the file is missing.
            if filename in _OPTIONAL_FILES:
                continue
            raise ModelConfigError(f"{at} has no {filename}: not a milcnn model folder "
                                   "(those are made by training/export.py)") from None
        folders.add(path.parent)
    if len(folders) != 1:
        raise ModelConfigError(f"{at}: files came from different commits ({sorted(f.name for f in folders)}); "
                               "run it again")
    return folders.pop()


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


