"""Enrolment from an operator's own row files: the windows of one node between two times become
reference cases of the label the operator gives them.

Normal traffic is enrolled from many windows (an hour to a day: the network's baseline is
learned from them), a fault from one or a few. The rows are windowed as the trainer windows
them (traffic/windowing.py: repairs, the data contract), so what is enrolled is what the
server will be sent. A span with more windows than one case may hold is enrolled as several
cases of the same label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from faultprint.traffic.rows import Rows, read_rows
from faultprint.traffic.windowing import WindowingOptions, cut_windows

# Windows one reference case may hold (the server's limit, server/rpc/reference_case_service.py).
MAX_WINDOWS_PER_CASE = 64


def parse_minute(text: str) -> int:
    """A UTC minute from an ISO 8601 time ("2026-03-01T10:00Z", naive times are UTC) or from
    the row format's minute count itself."""
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither an ISO 8601 time nor a minute count: {exc}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) // 60


@dataclass(frozen=True)
class Span:
    """The windows to enrol: one node of one network, from one UTC minute to another."""

    network: str
    node: str
    from_minute: int
    to_minute: int
    # Minutes between the starts of consecutive windows (60: windows that do not overlap).
    stride_minutes: int = 60


def windows_in_span(path: Path, span: Span) -> np.ndarray:
    """The usable windows of the span in a row file, (n, steps, features); ValueError saying
    why when there are none."""
    return _span_windows(read_rows(path), path, span)


def traffic_in_span(path: Path, network: str, from_minute: int, to_minute: int,
                    stride_minutes: int = 60) -> np.ndarray:  # fmt: skip
    """The usable windows of every node of the network between two minutes, labels unread: the
    unlabelled traffic a network's baseline is learned from."""
    rows = read_rows(path)
    nodes = sorted(set(map(str, rows.node[rows.network == network])))
    if not nodes:
        raise ValueError(f"{path}: no rows of network {network!r}")
    parts = []
    for node in nodes:
        try:
            parts.append(
                _span_windows(rows, path, Span(network, node, from_minute, to_minute, stride_minutes))
            )
        except ValueError:
            continue  # a node without rows (or a usable window) in the span
    if not parts:
        raise ValueError(f"{path}: no usable window of network {network!r} between minutes {from_minute} "
                         f"and {to_minute}")  # fmt: skip
    return np.concatenate(parts)


def _span_windows(rows: Rows, path: Path, span: Span) -> np.ndarray:
    mine = (rows.network == span.network) & (rows.node == span.node)
    mine &= (rows.minute >= span.from_minute) & (rows.minute < span.to_minute)
    if not mine.any():
        raise ValueError(
            f"{path}: no rows of node {span.node!r} of network {span.network!r} between minutes "
            f"{span.from_minute} and {span.to_minute}"
        )
    cut = cut_windows(rows.select(mine), WindowingOptions(stride_minutes=span.stride_minutes))
    if not len(cut.windows):
        raise ValueError(
            f"{path}: the span holds no usable {WindowingOptions.steps}-minute window "
            f"({cut.report.summary()})"
        )
    return cut.windows


def case_batches(windows: np.ndarray, most: int = MAX_WINDOWS_PER_CASE) -> list[np.ndarray]:
    """The windows split into as few cases as the per-case limit allows, of even sizes."""
    count = -(-len(windows) // most)
    return list(np.array_split(windows, count))


def add_traffic(target: str, path: Path, network: str, from_minute: int, to_minute: int,
                stride_minutes: int = 60) -> tuple[int, int]:  # fmt: skip
    """Replaces the network's baseline traffic with the span's windows of every node; returns
    (windows, batches kept)."""
    from faultprint.client.client import FaultprintClient

    windows = traffic_in_span(path, network, from_minute, to_minute, stride_minutes)
    kept = 0
    with FaultprintClient(target) as client:
        for i, part in enumerate(case_batches(windows)):
            kept = client.add_baseline_traffic(network, list(part), replace=i == 0)
    return len(windows), kept


def enrol_span(target: str, path: Path, span: Span, label: str, description: str = "") -> Sequence[str]:
    """Enrols the span's windows as cases labelled label; returns their ids."""
    from faultprint.client.client import FaultprintClient

    windows = windows_in_span(path, span)
    note = description or f"{span.node} {span.from_minute}-{span.to_minute} from {path.name}"
    with FaultprintClient(target) as client:
        return [
            client.create_reference_case(span.network, label, list(part), description=note).reference_case_id
            for part in case_batches(windows)
        ]
