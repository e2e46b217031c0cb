"""What ``run.json`` records of a run (the model, the settings that decide the results, the counts), and the
check that ``--resume`` continues a folder made the same way."""

from __future__ import annotations

import json
from pathlib import Path

from milcnn.errors import OutputFolderError, ProvenanceError
from milcnn.io.images import write_atomic
from milcnn.outputs.layout import RunLayout

__all__ = ["provenance", "check_provenance", "write_run"]


def provenance(clf, opts) -> dict:
    """What ``run.json`` records of the model and the settings that decide the results."""
    from milcnn import __version__

    model_file = clf.model.path
    return {"model": {"name": clf.name, "version": clf.info.version, "file": model_file.name,
                      "sha256": clf.info.file_sha256(model_file.name) or _sha256(model_file),
                      "origin": str(getattr(clf.origin, "repo_id", None) or clf.folder)},
            "precision": clf.precision, "backend": clf.model.backend, "threshold": opts.predict.threshold,
            "argmax": opts.argmax, "calibration": clf.info.calibration.method if clf.info.calibration else None,
            "scale": {"pixel_size": opts.predict.pixel_size, "cell_diameter": opts.predict.cell_diameter,
                      "otherwise": "each image's own pixel size where it declares one, else the model's default"
                      if clf.info.pixel_size else "the model's default"},
            "sdk_version": __version__}


def _sha256(path: Path) -> str:
    from milcnn.model.checksums import sha256_of

    return sha256_of(path)


def check_provenance(out: Path, mine: dict) -> dict | None:
    """The previous ``run.json`` of ``out``, after checking it was made as this run will be.

    Raises:
        ProvenanceError: another model (weights), precision or threshold, in one line.
    """
    path = RunLayout(out).run
    if not path.is_file():
        return None
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProvenanceError(f"{path}: unreadable ({exc}); use --overwrite") from None
    then, now = before.get("model", {}), mine["model"]
    differ = []
    if then.get("sha256") != now["sha256"] or then.get("version") != now["version"]:
        differ.append(f"model {then.get('name')} {then.get('version')} (sha256 {str(then.get('sha256'))[:12]}), not "
                      f"{now['name']} {now['version']} ({now['sha256'][:12]})")
    for key in ("precision", "threshold", "argmax"):
        if before.get(key) != mine[key]:
            differ.append(f"{key} {before.get(key)}, not {mine[key]}")
    if differ:
        raise ProvenanceError(f"{out} was made with {'; '.join(differ)}: resume with the same settings, or use "
                              "--overwrite")
    return before


def write_run(out: Path, record: dict) -> None:
    path = RunLayout(out).run
    try:
        with write_atomic(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise OutputFolderError(f"{path}: cannot write ({exc.strerror or exc})") from None
