"""The evaluation sets an operator registers: labelled row files of their own networks that every
new model version is scored on before it may be published (trainer/publishing.py).

The registry remembers each file's path and sha256; a registered file that has gone or changed
stops the gate until it is registered again (or the publish is forced), rather than letting a
model through unscored.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from faultprint.registry.connection import SyncRedis
from faultprint.registry.layout import RedisLayout


class EvalSetError(Exception):
    """A registered evaluation set cannot be read as it was registered."""


@dataclass(frozen=True)
class EvalSet:
    """One registered evaluation set."""

    path: str
    sha256: str
    registered_unix_s: float

    def check(self) -> Path:
        """The file, if it still holds what was registered; else EvalSetError."""
        path = Path(self.path)
        if not path.is_file():
            raise EvalSetError(f"evaluation set {self.path} is registered but missing; register it again")
        if file_sha256(path) != self.sha256:
            raise EvalSetError(
                f"evaluation set {self.path} changed since it was registered; register it again"
            )
        return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register(client: SyncRedis, layout: RedisLayout, path: Path) -> EvalSet:
    """Registers (or re-registers) a row file as an evaluation set."""
    resolved = path.resolve()
    if not resolved.is_file():
        raise EvalSetError(f"evaluation set {path} is not a file")
    entry = EvalSet(str(resolved), file_sha256(resolved), time.time())
    client.hset(layout.eval_sets, entry.path, json.dumps(asdict(entry)))
    return entry


def registered(client: SyncRedis, layout: RedisLayout) -> list[EvalSet]:
    """Every registered evaluation set, by path."""
    raw = client.hgetall(layout.eval_sets)
    return sorted((EvalSet(**json.loads(v)) for v in raw.values()), key=lambda e: e.path)


def unregister(client: SyncRedis, layout: RedisLayout, path: Path) -> bool:
    return bool(client.hdel(layout.eval_sets, str(path.resolve())))
