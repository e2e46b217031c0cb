"""Typed errors of milcnn. Each inherits a stdlib base (so ``except KeyError`` or
``except ValueError`` still works), quotes the offending value and says what to do."""

from __future__ import annotations

__all__ = [
    "one_line",
    "error_line",
    "MilcnnError",
    "ImageReadError",
    "ModelNotFoundError",
    "ModelConfigError",
    "ChecksumMismatchError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "HubOfflineError",
    "HubTokenError",
    "SelfTestError",
    "PlateMapError",
    "ResultsFolderError",
    "OutputFolderError",
    "ProvenanceError",
    "NotLazy",
    "DeviceFallbackWarning",
]


def one_line(exc: BaseException | str, *, limit: int | None = None) -> str:
    """An error (or a text) as one line: its whitespace runs collapsed, a ``KeyError``'s quotes dropped, at most
    ``limit`` characters; the exception's type name where it says nothing. The one place messages are folded."""
    text = exc if isinstance(exc, str) else str(exc)
    if isinstance(exc, KeyError) and not isinstance(exc, MilcnnError):
        text = text.strip("'\"")
    text = " ".join(text.split())
    if not text and not isinstance(exc, str):
        text = type(exc).__name__
    return text if limit is None else text[:limit]


def error_line(exc: BaseException) -> str:
    """One line for an image's failure (its path is said beside it): milcnn's own errors as they are
    worded (an ``ImageReadError`` by its reason), ``ValueError`` and ``OSError`` likewise, anything else
    with its type, e.g. ``DecompressionBombError: Image size ...``."""
    if isinstance(exc, ImageReadError):
        return one_line(exc.reason) or type(exc).__name__
    if isinstance(exc, (MilcnnError, ValueError, OSError)):
        return one_line(exc)
    return one_line(f"{type(exc).__name__}: {exc}")


class MilcnnError(Exception):
    """Base class of milcnn's own errors."""


class ImageReadError(MilcnnError, ValueError):
    """An image file is missing, empty, truncated or not an image milcnn can read."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelNotFoundError(MilcnnError, KeyError):
    """No model of that name in the zoo, and it is not an ``org/name`` Hub repo or a folder."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        return (f"unknown model {self.name!r}; the zoo has {', '.join(self.known)} "
                "(or give a Hub repo as 'org/name', or a folder with model.onnx and config.json)")


class ModelConfigError(MilcnnError, ValueError):
    """A model folder's ``config.json`` is missing, unreadable or lacks a field."""


class ChecksumMismatchError(MilcnnError, ValueError):
    """A model file's sha256 differs from the one pinned in the registry or its ``config.json``."""

    def __init__(self, path, expected: str, actual: str):
        self.path, self.expected, self.actual = str(path), expected, actual
        super().__init__(f"{path}: sha256 {actual[:12]}... does not match the pinned {expected[:12]}...; "
                         "the file is corrupt or was changed; nothing was deleted "
                         "(re-fetch with `milzoo download MODEL --force`)")


class RepositoryNotFoundError(MilcnnError, KeyError):
    """The Hub has no repository of that id (or it is private and no token allows reading it)."""

    def __init__(self, repo_id: str, endpoint: str):
        self.repo_id, self.endpoint = repo_id, endpoint
        super().__init__(repo_id)

    def __str__(self) -> str:
        return (f"Hub repository {self.repo_id!r} not found at {self.endpoint} (check the spelling; "
                "if it is private, log in with `hf auth login` or set HF_TOKEN)")


class RevisionNotFoundError(MilcnnError, KeyError):
    """The repository exists but has no branch, tag or commit of that name."""

    def __init__(self, repo_id: str, revision: str, endpoint: str):
        self.repo_id, self.revision, self.endpoint = repo_id, revision, endpoint
        super().__init__(revision)

    def __str__(self) -> str:
        return (f"revision {self.revision!r} not found in Hub repository {self.repo_id!r} at {self.endpoint} "
                "(give a branch, a tag such as 'v1.0.0', or a full commit sha)")


class HubOfflineError(MilcnnError, ConnectionError):
    """The Hub cannot be reached (or offline mode is on) and nothing usable is cached."""

    def __init__(self, repo_id: str, revision: str | None, reason: str):
        self.repo_id, self.revision, self.reason = repo_id, revision, reason
        at = f"@{revision}" if revision else ""
        super().__init__(f"{repo_id}{at} is not in the local cache and {reason}; fetch it once on a machine "
                         f"with network (`milzoo download {repo_id}{at}`) and share the cache (HF_HOME)")


class HubTokenError(MilcnnError, PermissionError):
    """Pushing to the Hub needs a token and none was found."""


class SelfTestError(MilcnnError, AssertionError):
    """A model's output on its bundled sample differs from the recorded output."""


class PlateMapError(MilcnnError, ValueError):
    """A ``--plate-map`` file that cannot be used (names the file, line and what is wrong)."""


class ResultsFolderError(MilcnnError, FileExistsError):
    """``--out`` already holds results (and neither ``--resume`` nor ``--overwrite`` was given),
    or what it holds cannot be resumed."""


class OutputFolderError(MilcnnError, OSError):
    """The output folder itself fails (not a folder, read-only, full, locked by another run): the
    run stops, as no result could be kept."""


class ProvenanceError(OutputFolderError):
    """``--resume`` into a folder made with another model, precision or threshold."""


class DeviceFallbackWarning(RuntimeWarning):
    """The device asked for (``cuda``) is not usable here: the model runs on the CPU instead."""


class NotLazy(MilcnnError, ValueError):
    """A TIFF cannot be read a window at a time (its layout, dtype or codec): it is read whole instead."""
