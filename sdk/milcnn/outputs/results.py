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
from pathlib import Path

from milcnn.errors import MilcnnError, OutputFolderError, ResultsFolderError
from milcnn.outputs.layout import ERRORS, LOCK_FILE, OUTPUT_DIRS, OUTPUT_FILES, PREDICTIONS, as_text

__all__ = ["ResultsFolder"]



class ResultsFolder:
    """``OUT/predictions.csv``, ``OUT/errors.csv``, ``OUT/masks/``, ``OUT/overlays/``.

    The folder is locked for the object's life (``OUT/.milzoo.lock``, an exclusive ``flock`` the
    kernel releases when the process ends, killed or not), so two runs never write into one folder.

    Args:
        out: the folder.
        header: the predictions.csv header (``image, label, p_<class>...``).
        resume: keep the predictions there and report their images as done; images in ``errors.csv``
            are tried again (``retry``).
        overwrite: delete milcnn's outputs in ``out`` first (other files are left alone).

    Raises:
        ResultsFolderError: results exist and neither flag was given; both flags; or a
            ``predictions.csv`` whose header is another model's.
        OutputFolderError: ``out`` is not a folder, cannot be written, or another run holds it.
    """

    def __init__(self, out: Path, header: list[str], *, resume: bool = False, overwrite: bool = False):
        self.out = Path(out)
        self.header = header
        self._predictions = self._errors = self._lock = None
        if resume and overwrite:
            raise ResultsFolderError(f"{self.out}: give --resume or --overwrite, not both")
        if self.out.exists() and not self.out.is_dir():
            raise OutputFolderError(f"{self.out}: not a folder")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputFolderError(f"{self.out}: cannot create the output folder ({exc.strerror or exc})") from None
        self._lock = _lock_folder(self.out)
        try:
            existing = self.has_results()
            if existing and not (resume or overwrite):
                raise ResultsFolderError(f"{self.out} already holds results; pass --resume to finish them or "
                                         "--overwrite to replace them")
            if overwrite:
                for name in OUTPUT_FILES:
                    (self.out / name).unlink(missing_ok=True)
                for name in OUTPUT_DIRS:
                    shutil.rmtree(self.out / name, ignore_errors=True)
            if resume:
                self.remove_partial_files()
            self.done_predictions = self._read(PREDICTIONS, header) if resume else []
            self.done_errors = self._read(ERRORS, ["image", "error"]) if resume else []
            self._predictions = self._open(PREDICTIONS, header)
        except OSError as exc:
            self.close()
            if isinstance(exc, MilcnnError):
                raise
            raise OutputFolderError(f"{self.out}: cannot write results ({exc.strerror or exc})") from None
        except BaseException:
            self.close()
            raise

    def remove_partial_files(self) -> None:
        """Delete the temporary files of a killed run (``.<name>.<random>.part``, see
        ``milcnn.io.images.write_atomic``): their images have no row, so they are predicted again. Also at the end
        of a run that was not interrupted: a Dask worker killed mid-file leaves one, and its image ran elsewhere."""
        for name in OUTPUT_DIRS:
            folder = self.out / name
            if folder.is_dir():
                for stale in folder.glob(".*.part"):
                    stale.unlink(missing_ok=True)

    def has_results(self) -> bool:
        return (self.out / PREDICTIONS).exists() or (self.out / ERRORS).exists() or any(
            (self.out / name).is_dir() and any((self.out / name).iterdir()) for name in OUTPUT_DIRS)

    @property
    def done(self) -> set[str]:
        """Images (as written in the ``image`` column) that already have a prediction."""
        return {row[0] for row in self.done_predictions}

    def retry(self, images: set[str]) -> None:
        """Forget the errors of ``images`` (they are about to be tried again): ``errors.csv`` is
        rewritten without their rows, so it ends up holding only what still fails."""
        keep = [row for row in self.done_errors if row[0] not in images]
        if len(keep) == len(self.done_errors):
            return
        if keep:
            self._rewrite(ERRORS, ["image", "error"], keep)
        else:  # as a run without failures leaves it: no errors.csv
            if self._errors is not None:
                self._errors.close()
                self._errors = None
            try:
                (self.out / ERRORS).unlink(missing_ok=True)
            except OSError as exc:
                raise OutputFolderError(f"{self.out / ERRORS}: cannot remove ({exc.strerror or exc})") from None
        self.done_errors = keep

    def finish(self, order: list[str]) -> None:
        """Put the rows of both files in ``order`` (the inputs, as an uninterrupted run writes them:
        a resumed run appends retried images last). Rows of images not in ``order`` go last, as they were."""
        rank = {image: i for i, image in enumerate(order)}
        for name, header in ((PREDICTIONS, self.header), (ERRORS, ["image", "error"])):
            path = self.out / name
            if not path.exists():
                continue
            rows = self._read(name, header)
            ordered = sorted(rows, key=lambda row: rank.get(row[0], len(rank)))
            if ordered != rows:
                self._rewrite(name, header, ordered)

    def add_prediction(self, row: list) -> None:
        self._append(self._predictions, row)

    def add_error(self, image: str, message: str) -> None:
        if self._errors is None:  # the header goes with the first row: a full disk leaves no header-only file
            self._errors = self._open(ERRORS, ["image", "error"], first=[image, message])
            return
        self._append(self._errors, [image, message])

    def close(self) -> None:
        for fh in (self._predictions, self._errors):
            if fh is not None:
                fh.close()
        self._predictions = self._errors = None
        if self._lock is not None:
            try:  # removed while still held: a finished run leaves no lock file behind
                (self.out / LOCK_FILE).unlink(missing_ok=True)
            except OSError:
                pass
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> "ResultsFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, name: str, header: list[str], *, first: list | None = None):
        """The file opened for appending; a new one gets ``header`` (and ``first``, in the same write). A new
        file whose first write fails is removed, so no header-only file is left."""
        path = self.out / name
        fresh = False
        try:
            fresh = not path.exists() or path.stat().st_size == 0
            fh = open(path, "a", newline="", encoding="utf-8")
            if fresh or first is not None:
                try:
                    self._append(fh, *([header] if fresh else []), *([first] if first is not None else []))
                except OutputFolderError:
                    fh.close()
                    if fresh:
                        path.unlink(missing_ok=True)
                    raise
        except OutputFolderError:
            raise
        except OSError as exc:
            raise OutputFolderError(f"{path}: cannot write ({exc.strerror or exc})") from None
        return fh

    def _rewrite(self, name: str, header: list[str], rows: list[list[str]]) -> None:
        """Replace a file's rows atomically (an open append handle is reopened on the new file)."""
        from milcnn.io.images import write_atomic

        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
        try:
            with write_atomic(self.out / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(buffer.getvalue())
        except OSError as exc:
            raise OutputFolderError(f"{self.out / name}: cannot write ({exc.strerror or exc})") from None
        attr = {PREDICTIONS: "_predictions", ERRORS: "_errors"}[name]
        if getattr(self, attr) is not None:
            getattr(self, attr).close()
            setattr(self, attr, self._open(name, header))

    @staticmethod
    def _append(fh, *rows: list) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([[as_text(c) if isinstance(c, str) else c for c in row]
                                                            for row in rows])
        try:
            fh.write(buffer.getvalue())  # one write per call: a kill cannot split it
            fh.flush()
        except OSError as exc:
            raise OutputFolderError(f"{fh.name}: cannot write ({exc.strerror or exc})") from None

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
            k = next((i for i, (a, b) in enumerate(zip(rows[0], header)) if a != b), min(len(rows[0]), len(header)))
            theirs = repr(rows[0][k]) if k < len(rows[0]) else "nothing"
            mine = repr(header[k]) if k < len(header) else "nothing"
            raise ResultsFolderError(f"{path}: column {k + 1} is {theirs} where this model and milcnn-sdk write "
                                     f"{mine}; resume with the model and SDK version that made it, or use --overwrite")
        return rows[1:]


def _lock_folder(out: Path, _tries: int = 5):
    """Hold an exclusive lock on ``out`` (``OUT/.milzoo.lock`` with the holder's PID); the open file is
    returned and closing it (or the process ending) releases the lock. Where ``fcntl`` is missing
    (Windows) no lock is taken."""
    import os

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    import stat

    path = out / LOCK_FILE
    try:  # never through a link planted in its place: O_NOFOLLOW, and a regular file only
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     0o666)
    except OSError as exc:
        if path.is_symlink():
            raise OutputFolderError(f"{path}: a link, not milzoo's lock file; refused (remove it)") from None
        raise OutputFolderError(f"{out}: cannot write in the output folder ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputFolderError(f"{path}: not a regular file; refused (remove it)")
    fh = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise OutputFolderError(f"{out} is in use by another milzoo run (PID {holder}); wait for it to end or "
                                "choose another --out") from None
    try:  # a run that finished between our open and our lock removed the file we hold: lock the new one
        same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
    except OSError:
        same = False
    if not same:
        fh.close()
        if _tries <= 1:
            raise OutputFolderError(f"{out}: its lock file keeps changing; is another milzoo run starting there?")
        return _lock_folder(out, _tries - 1)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
    except OSError as exc:
        fh.close()
        raise OutputFolderError(f"{out}: cannot write in the output folder ({exc.strerror or exc})") from None
    return fh
