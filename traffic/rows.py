"""The on-disk format of labelled per-minute probe rows, which the trainer reads.

One row per node and minute, as Parquet (``.parquet``) or CSV (``.csv``):

- ``node`` (string): the node the probe watches, such as ``pcscf-3``;
- ``network`` (string): the operator network (a faultprint network id);
- ``minute`` (int64): the UTC minute, counted from 1970-01-01T00:00Z (a Parquet
  timestamp column is accepted and converted);
- one float column per statistic, named as in traffic/catalogue.py (129 columns), each
  holding what the probe data contract says (traffic/contract.py: kind, unit, valid
  range; docs/data-contract.md); extra columns are ignored, a missing one is an error;
- ``label`` (string): ``normal`` or the fault that shows in that minute (as an operator
  marks an incident: not the quiet hours of a busy-hour fault, nor the faint tail of one
  that decays). Optional for rows that are only to be diagnosed; needed for training
  and for evaluation on real data.

Missing minutes are simply absent rows; a value lost in export is empty (CSV) or
null/NaN; a probe restart shows as a negative counter delta. traffic/windowing.py
repairs or drops all three, and values out of contract, and says so. The simulator writes this same format, so
real probe exports converted to it train the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from faultprint.traffic.catalogue import FEATURE_NAMES

KEY_COLUMNS = ("node", "network", "minute")


@dataclass
class Rows:
    """Per-minute rows in memory: parallel arrays, values as (rows, features) float64."""

    node: np.ndarray
    network: np.ndarray
    minute: np.ndarray
    values: np.ndarray
    label: np.ndarray | None

    @classmethod
    def concat(cls, parts: list[dict[str, np.ndarray]]) -> Rows:
        """Joins the column dicts the simulator returns."""
        return cls(
            *(np.concatenate([p[k] for p in parts]) for k in ("node", "network", "minute", "values", "label"))
        )

    @classmethod
    def merge(cls, parts: list[Rows]) -> Rows:
        """Joins row sets; the label column survives only if every part has one."""
        node, network, minute, values = (
            np.concatenate([getattr(p, k) for p in parts]) for k in ("node", "network", "minute", "values")
        )
        labels = [p.label for p in parts]
        label: np.ndarray | None = None
        if all(lab is not None for lab in labels):
            label = np.concatenate(labels)  # type: ignore[arg-type]
        return cls(node, network, minute, values, label)

    def __len__(self) -> int:
        return len(self.minute)

    def select(self, keep: np.ndarray) -> Rows:
        """The rows where the boolean mask keep is true."""
        label = None if self.label is None else self.label[keep]
        return Rows(self.node[keep], self.network[keep], self.minute[keep], self.values[keep], label)


def write_rows(rows: Rows, path: Path) -> None:
    columns: dict[str, pa.Array] = {
        "node": pa.array(rows.node.astype(str)),
        "network": pa.array(rows.network.astype(str)),
        "minute": pa.array(rows.minute.astype(np.int64)),
    }
    for i, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(rows.values[:, i], from_pandas=True)
    if rows.label is not None:
        columns["label"] = pa.array(rows.label.astype(str))
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)


def read_rows(path: Path) -> Rows:
    """Reads a row file; raises ValueError naming any missing column."""
    if path.suffix == ".csv":
        table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(strings_can_be_null=False))
    else:
        table = pq.read_table(path)
    missing = [c for c in (*KEY_COLUMNS, *FEATURE_NAMES) if c not in table.column_names]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"{path}: missing columns {shown}; see traffic/rows.py for the format")
    minute = table.column("minute")
    if pa.types.is_timestamp(minute.type):
        minute = pc.divide(pc.cast(pc.cast(minute, pa.timestamp("s")), pa.int64()), 60)
    values = np.column_stack(
        [table.column(n).cast(pa.float64()).to_numpy(zero_copy_only=False) for n in FEATURE_NAMES]
    )
    label = (
        table.column("label").to_numpy(zero_copy_only=False).astype(str)
        if "label" in table.column_names
        else None
    )
    return Rows(
        node=table.column("node").to_numpy(zero_copy_only=False).astype(str),
        network=table.column("network").to_numpy(zero_copy_only=False).astype(str),
        minute=minute.to_numpy(zero_copy_only=False).astype(np.int64),
        values=values,
        label=label,
    )
