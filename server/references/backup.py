"""Export and import of a deployment's reference cases, so that a Redis that lost its data can be restored.

Windows are the source of truth: an export holds each case's metadata and example
windows (packed float32), never embeddings, which every replica recomputes under the
version it serves. The file is Parquet, one row per case, with the store's identity in
the schema metadata. An import gives the store that identity back, which tells replicas
that kept serving from memory that their store is restored, and tells every other replica
to adopt it (server/model/replica_sync.py). Cases whose id is taken are left as they are.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from faultprint.server.references.store import ReferenceStore, StoredCase, check_id, windows_from_bytes

EXPORT_FORMAT = 1
# Cases written per pipelined round trip on import.
_RESTORE_CHUNK = 256
_METADATA_KEY = b"faultprint"
_SCHEMA = pa.schema(
    [
        ("network", pa.string()),
        ("reference_case_id", pa.string()),
        ("label", pa.string()),
        ("description", pa.string()),
        ("create_time_unix_s", pa.float64()),
        ("window_count", pa.int32()),
        ("steps", pa.int32()),
        ("features", pa.int32()),
        # The example windows as little-endian float32, (window_count, steps, features).
        ("windows", pa.large_binary()),
    ]
)


class BackupError(Exception):
    """An export file that cannot be read or does not describe reference cases."""


@dataclass(frozen=True)
class BackupSummary:
    """What an export wrote or an import did."""

    networks: int
    cases: int
    # Cases an import left alone because their id was taken.
    skipped: int = 0
    store_identity: str | None = None


async def export_cases(store: ReferenceStore, path: Path, networks: list[str] | None = None) -> BackupSummary:
    """Writes every case of networks (default: all) with its windows to a Parquet file."""
    chosen = networks if networks is not None else await store.networks()
    columns: dict[str, list[object]] = {name: [] for name in _SCHEMA.names}
    for network in chosen:
        for case, blob in await store.export_network(network):
            for name, value in (
                ("network", case.network),
                ("reference_case_id", case.case_id),
                ("label", case.label),
                ("description", case.description),
                ("create_time_unix_s", case.create_time_unix_s),
                ("window_count", case.window_count),
                ("steps", case.steps),
                ("features", case.features),
                ("windows", blob),
            ):
                columns[name].append(value)
    identity = await store.identity()
    about = {"format": EXPORT_FORMAT, "store_identity": identity, "exported_unix_s": time.time()}
    schema = _SCHEMA.with_metadata({_METADATA_KEY: json.dumps(about).encode()})
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, Path(path))
    return BackupSummary(len(chosen), table.num_rows, store_identity=identity)


async def import_cases(store: ReferenceStore, path: Path) -> BackupSummary:
    """Stores every case of an export whose id is free; the store takes the export's identity."""
    table, about = _read(Path(path))
    cases = [_case_of(row) for row in table.to_pylist()]
    created = 0
    for start in range(0, len(cases), _RESTORE_CHUNK):
        created += await store.restore(cases[start : start + _RESTORE_CHUNK])
    identity = about.get("store_identity")
    if identity:
        await store.replace_identity(str(identity))
    networks = {case.network for case, _ in cases}
    return BackupSummary(len(networks), created, len(cases) - created, await store.identity())


def _read(path: Path) -> tuple[pa.Table, dict[str, object]]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise BackupError(f"{path} is not a readable reference-case export: {exc}") from exc
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    if raw is None or not set(_SCHEMA.names) <= set(table.column_names):
        raise BackupError(f"{path} is not a faultprint reference-case export (columns {table.column_names})")
    about = json.loads(raw)
    if about.get("format") != EXPORT_FORMAT:
        raise BackupError(f"{path} has export format {about.get('format')}; this build reads {EXPORT_FORMAT}")
    return table, about


def _case_of(row: dict[str, object]) -> tuple[StoredCase, np.ndarray]:
    case = StoredCase(
        network=check_id("network", str(row["network"])),
        case_id=check_id("reference_case_id", str(row["reference_case_id"])),
        label=check_id("label", str(row["label"])),
        description=str(row["description"]),
        window_count=int(row["window_count"]),  # type: ignore[call-overload]
        steps=int(row["steps"]),  # type: ignore[call-overload]
        features=int(row["features"]),  # type: ignore[call-overload]
        create_time_unix_s=float(row["create_time_unix_s"]),  # type: ignore[arg-type]
    )
    blob = row["windows"]
    expected = case.window_count * case.steps * case.features * 4
    if not isinstance(blob, bytes) or len(blob) != expected:
        raise BackupError(f"case {case.network}/{case.case_id}: windows hold the wrong number of bytes")
    return case, windows_from_bytes(blob, case)
