"""The id rule for everything that names a Redis key or a file: networks, nodes, cases, labels, versions.

Also how an error message quotes caller input: a message travels in a response's trailing
metadata, so it never repeats unbounded input.
"""

from __future__ import annotations

import re

# Network, node, case and model version ids appear inside Redis keys and file names, so
# they may not contain ':', '/', whitespace or control characters, nor be '.' or '..'.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")
ID_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_valid_id(value: str) -> bool:
    """Whether value may name a network, node, case, label or model version (the whole string)."""
    return ID_PATTERN.fullmatch(value) is not None


# Longest piece of caller input an error message quotes, in characters: a message travels
# in the response's trailing metadata, which gRPC caps at 16 kB by default.
QUOTE_MAX_CHARS = 64


def quote(value: object, limit: int = QUOTE_MAX_CHARS) -> str:
    """repr(value), cut to about limit characters with the full length said, for messages."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}... ({size} characters)"
