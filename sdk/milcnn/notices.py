"""One-line notices on stderr: things a user should know that are not errors (a fallback taken)."""

from __future__ import annotations

import sys

__all__ = ["notice"]


def notice(message: str) -> None:
    """Print ``milcnn: <message>`` as one line on stderr."""
    print(f"milcnn: {' '.join(message.split())}", file=sys.stderr, flush=True)
