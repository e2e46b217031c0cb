"""Settings dataclasses as command-line flags: the one helper for ``training.train`` and ``training.finetune``.

Every field of a settings class becomes ``--field-name`` (booleans ``--x / --no-x``), with a help line taken
from the comment beside the field (or the comment lines right above it) and its default; a field without one
is an error here, so ``--help`` documents every flag.
"""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import MISSING, fields

__all__ = ["add_options", "field_help", "flag_type", "settings_from_args", "prog"]

#: how the training commands name themselves in their usage lines: ``python -m training.X`` in the repository,
#: ``milzoo X`` where they are installed as ``milcnn.training`` (and when ``milzoo`` runs them)
COMMAND_PREFIX = "python -m training." if __package__ == "training" else "milzoo "


def prog(command: str) -> str:
    return COMMAND_PREFIX + command

_FIELD = re.compile(r"^\s{4}(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$")


def flag_type(f) -> type:
    """The argparse type of a settings dataclass field (``int``, ``float``, optional ``float``, else ``str``)."""
    return {"int": int, "float": float, "float | None": float, "int | None": int}.get(str(f.type), str)


def field_help(cls) -> dict[str, str]:
    """``{field: help}`` from the comments in ``cls``'s source: the comment on the field's line, else the
    comment lines right above it."""
    helps, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = _FIELD.match(line)
        if m:
            helps[m[1]] = m[2].strip() if m[2] else " ".join(above)
        above = []
    return helps


def add_options(parser: argparse.ArgumentParser, cls, *, skip=(), required=()) -> None:
    """A flag per field of ``cls`` (not in ``skip``); every default None, so ``settings_from_args`` knows which
    were given. ``required``: fields the command line must give.

    Raises:
        TypeError: a field without a help comment.
    """
    helps = field_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        if not helps.get(f.name):
            raise TypeError(f"{cls.__name__}.{f.name} has no help comment")
        default = f.default if f.default is not MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        text = f"{helps[f.name]} (default: {default!r})".replace("%", "%%")
        if str(f.type) == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, type=flag_type(f), default=None, required=f.name in required,
                                metavar=f.name.upper(), help=text)


def settings_from_args(cls, args: argparse.Namespace, base: dict | None = None) -> dict:
    """``base`` (e.g. a ``--config`` file's settings) with the flags that were given laid over it."""
    settings = dict(base or {})
    for f in fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            settings[f.name] = value
    return settings
