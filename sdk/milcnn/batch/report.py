"""What a run tells the user while it runs: per-file messages (repeats counted) and progress."""

from __future__ import annotations

import sys
import time
from typing import Callable

__all__ = ["Messages", "Progress", "PROGRESS_SECONDS", "REPEATS_SHOWN"]

PROGRESS_SECONDS = 30.0  # a progress line this often when stderr is not a terminal
REPEATS_SHOWN = 3  # a message repeated for many files is shown this many times, then counted


class Messages:
    """Per-file messages on stderr: each distinct message (the file name aside) is shown for its first
    ``REPEATS_SHOWN`` files, then only counted; ``summary`` lists the counts."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.counts: dict[str, int] = {}

    def file(self, path, message: str) -> None:
        n = self.counts[message] = self.counts.get(message, 0) + 1
        if n <= REPEATS_SHOWN:
            self.echo(f"milzoo: {path}: {message}")
        if n == REPEATS_SHOWN:
            self.echo(f"milzoo: (further files with this message are counted, not shown: {message})")

    def summary(self) -> list[str]:
        return [f"milzoo: {n} files: {message}" for message, n in self.counts.items() if n > REPEATS_SHOWN]


class Progress:
    """On a terminal, click's bar; elsewhere (a batch or cluster log), one line every
    ``PROGRESS_SECONDS``: images done of total, rate, and time left."""

    def __init__(self, total: int, label: str, *, stream=None, every: float | None = None):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.every = PROGRESS_SECONDS if every is None else every
        self.start = self.last = time.monotonic()
        self.bar = None
        if self.stream.isatty():
            import click

            self.bar = click.progressbar(length=total, label=label, file=self.stream, show_pos=True)
            self.bar.__enter__()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.stream.write(f"milzoo: {self.label}: {self.done} of {self.total} images, {rate:.2f} images/s, "
                              f"about {_duration(left)} left\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
