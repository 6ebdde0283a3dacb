"""Command lines generated from a benchmark's options dataclass, the comment above each field its help."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from faultprint.server.settings import declared_help

T = TypeVar("T")


def parser_for(options_class: type, description: str) -> argparse.ArgumentParser:
    """One flag per field (--field-name), its help the comment above the field and its default."""
    helps = declared_help(options_class)
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in fields(options_class):
        default = f.default if f.default is not MISSING else None
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=_metavar(str(f.type)),
            help=f"{helps[f.name]} Default: {shown(default)}.",
        )
    return parser


def options_from(options_class: type[T], args: argparse.Namespace) -> T:
    """The options the parsed flags name; fields not given keep their defaults."""
    types = {f.name: str(f.type) for f in fields(options_class)}  # type: ignore[arg-type]
    given = {name: parse(name, raw, types[name]) for name, raw in vars(args).items() if raw is not None}
    return options_class(**given)


def parse_args(options_class: type[T], description: str, argv: Sequence[str] | None = None) -> T:
    return options_from(options_class, parser_for(options_class, description).parse_args(argv))


def shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(none)"
    if value is None:
        return "auto"
    return str(value)


def parse(name: str, raw: str, kind: str) -> Any:
    """raw as a value of the field's declared type (bool, int, float, float | None, str or a
    tuple of int or str, written as a comma list)."""
    try:
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError("use true or false")
            return raw.lower() in ("1", "true", "yes")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "float | None":
            return None if raw.lower() == "auto" else float(raw)
        if kind.startswith("tuple[int"):
            return tuple(int(x) for x in raw.split(",") if x.strip())
        if kind.startswith("tuple[str"):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
    except ValueError as exc:
        raise SystemExit(f"--{name.replace('_', '-')}={raw!r} is not a valid {kind}: {exc}") from None
    return raw


def _metavar(kind: str) -> str:
    if kind.startswith("tuple["):
        return "A,B,..."
    return {"bool": "true|false", "float | None": "FLOAT|auto"}.get(kind, kind.upper())
