"""Library messages: everything milcnn has to say goes to the ``milcnn`` logger (``training`` for the
training package). Library users see nothing unless they configure logging (the package installs a
``NullHandler``, as libraries should); ``milzoo`` and the training commands call ``log_to_stderr``.

>>> import milcnn.logs
>>> milcnn.logs.log_to_stderr()          # one line per message on stderr, "milcnn: ..."
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER_NAMES", "log_to_stderr"]

#: the loggers whose messages ``log_to_stderr`` shows: the SDK's, the training package's, the benchmarks',
#: and the module run as a command (``python -m training.train`` logs as ``__main__``)
LOGGER_NAMES = ("milcnn", "training", "benchmarks", "__main__")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{self._prefix(record)}{' '.join(record.getMessage().split())}"

    @staticmethod
    def _prefix(record: logging.LogRecord) -> str:
        return "milcnn: " if record.name.split(".")[0] == "milcnn" else ""


def log_to_stderr(level: int = logging.INFO) -> logging.Handler:
    """Show milcnn's messages at ``level`` and above on stderr, one line each (SDK messages prefixed
    ``milcnn: ``). Calling it again changes the level and adds no second handler.

    Returns:
        the handler (remove it from the loggers in ``LOGGER_NAMES`` to stop).
    """
    handler = None
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for h in logger.handlers:
            if getattr(h, "_milcnn_stderr", False):
                handler = h
        if handler is None:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_OneLine())
            handler._milcnn_stderr = True
        if handler not in logger.handlers:
            logger.addHandler(handler)
    handler.setLevel(level)
    return handler
