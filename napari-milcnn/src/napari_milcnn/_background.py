"""One long job at a time off the GUI thread (``napari.qt.threading``, with napari's progress indicator): the
button that started it is disabled until it ends, and an error is shown in a label as one line."""

from __future__ import annotations


class Background:
    def __init__(self, button, status):
        self.button, self.status = button, status
        self.worker = None  # the running job, if any

    def start(self, job, *args, desc: str, returned):
        """Run ``job(*args)`` in a worker thread; ``returned`` gets its result on the GUI thread. Returns the started
        worker (None while another runs)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return None
        self.button.setEnabled(False)
        worker = create_worker(job, *args, _progress={"desc": desc})
        worker.returned.connect(returned)
        worker.errored.connect(self.failed)
        worker.finished.connect(self._done)
        self.worker = worker
        worker.start()
        return worker

    def _done(self) -> None:
        self.worker = None
        self.button.setEnabled(True)

    def failed(self, exc: BaseException) -> None:
        from milcnn.errors import one_line

        self.status.setText(one_line(exc))
