"""The output folder of ``milzoo predict``: results grow a row at a time and survive a kill.

``predictions.csv`` and ``errors.csv`` gain each row as its image finishes (one ``write`` per
row, after that image's mask and overlay are in place), so a killed run leaves complete rows
for exactly the images whose outputs are complete. ``--resume`` reads them back and skips
those images; the final files are then the same as an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter
from pathlib import Path

from milcnn.errors import MilcnnError

__all__ = ["ResultsFolder", "ResultsFolderError", "output_stems", "PREDICTIONS", "ERRORS"]

PREDICTIONS = "predictions.csv"
ERRORS = "errors.csv"
_OUTPUT_DIRS = ("masks", "overlays")


class ResultsFolderError(MilcnnError, FileExistsError):
    """``--out`` already holds results (and neither ``--resume`` nor ``--overwrite`` was given),
    or what it holds cannot be resumed."""


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """The output file stem of each input: its own stem, or, where several inputs share a stem,
    its path relative to their common folder with ``__`` for the separators (``plate1__A01``)."""
    counts = Counter(p.stem for p in paths)
    clashing = [p.resolve() for p in paths if counts[p.stem] > 1]
    root = Path(*_common_parts([p.parent.parts for p in clashing])) if clashing else None
    stems = {}
    for p in paths:
        if counts[p.stem] == 1:
            stems[p] = p.stem
        else:
            relative = p.resolve().relative_to(root) if root is not None else p
            stems[p] = "__".join((*relative.parent.parts, p.stem)) or p.stem
    return stems


def _common_parts(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = parts[0]
    for other in parts[1:]:
        n = 0
        while n < min(len(common), len(other)) and common[n] == other[n]:
            n += 1
        common = common[:n]
    return common


class ResultsFolder:
    """``OUT/predictions.csv``, ``OUT/errors.csv``, ``OUT/masks/``, ``OUT/overlays/``.

    Args:
        out: the folder.
        header: the predictions.csv header (``image, label, p_<class>...``).
        resume: keep what is there and report its images as done.
        overwrite: delete milcnn's outputs in ``out`` first (other files are left alone).

    Raises:
        ResultsFolderError: results exist and neither flag was given; both flags; or a
            ``predictions.csv`` whose header is another model's.
    """

    def __init__(self, out: Path, header: list[str], *, resume: bool = False, overwrite: bool = False):
        self.out = Path(out)
        self.header = header
        if resume and overwrite:
            raise ResultsFolderError(f"{self.out}: give --resume or --overwrite, not both")
        existing = self.has_results()
        if existing and not (resume or overwrite):
            raise ResultsFolderError(f"{self.out} already holds results; pass --resume to finish them or "
                                     "--overwrite to replace them")
        if overwrite:
            for name in (PREDICTIONS, ERRORS):
                (self.out / name).unlink(missing_ok=True)
            for name in _OUTPUT_DIRS:
                shutil.rmtree(self.out / name, ignore_errors=True)
        if resume:
            self._remove_partial_files()
        self.done_predictions = self._read(PREDICTIONS, header) if resume else []
        self.done_errors = self._read(ERRORS, ["image", "error"]) if resume else []
        self.out.mkdir(parents=True, exist_ok=True)
        self._predictions = self._open(PREDICTIONS, header)
        self._errors = None

    def _remove_partial_files(self) -> None:
        """Delete the temporary files of a killed run (``.<name>.<random>.part``, see
        ``milcnn.io.write_atomic``): their images have no row, so they are predicted again."""
        for name in _OUTPUT_DIRS:
            folder = self.out / name
            if folder.is_dir():
                for stale in folder.glob(".*.part"):
                    stale.unlink(missing_ok=True)

    def has_results(self) -> bool:
        return (self.out / PREDICTIONS).exists() or (self.out / ERRORS).exists() or any(
            (self.out / name).is_dir() and any((self.out / name).iterdir()) for name in _OUTPUT_DIRS)

    @property
    def done(self) -> set[str]:
        """Images (as written in the ``image`` column) that already have a row."""
        return {row[0] for row in self.done_predictions + self.done_errors}

    def add_prediction(self, row: list) -> None:
        self._append(self._predictions, row)

    def add_error(self, image: str, message: str) -> None:
        if self._errors is None:
            self._errors = self._open(ERRORS, ["image", "error"])
        self._append(self._errors, [image, message])

    def close(self) -> None:
        for fh in (self._predictions, self._errors):
            if fh is not None:
                fh.close()

    def __enter__(self) -> "ResultsFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, name: str, header: list[str]):
        path = self.out / name
        fresh = not path.exists() or path.stat().st_size == 0
        fh = open(path, "a", newline="", encoding="utf-8")
        if fresh:
            self._append(fh, header)
        return fh

    @staticmethod
    def _append(fh, row: list) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        fh.write(buffer.getvalue())  # one write per row: a kill cannot split it
        fh.flush()

    def _read(self, name: str, header: list[str]) -> list[list[str]]:
        """The complete rows of an existing file; a torn last line (no newline) is cut off."""
        path = self.out / name
        if not path.exists():
            return []
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with open(path, "r+b") as fh:
                fh.truncate(len(data))
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        if rows and rows[0] != header:
            raise ResultsFolderError(f"{path}: its columns {rows[0][:4]}... are not this model's {header[:4]}...; "
                                     "resume with the model that made it, or use --overwrite")
        return rows[1:]
