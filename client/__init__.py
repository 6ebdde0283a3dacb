"""The faultprint Python client: typed sync and asyncio access to a faultprint server."""

from faultprint.client.client import (
    AsyncFaultprintClient,
    FaultprintClient,
    ProbeStream,
    StreamItem,
    encode_window,
)
from faultprint.client.throttle import ThrottleOptions

__all__ = [
    "AsyncFaultprintClient",
    "FaultprintClient",
    "ProbeStream",
    "StreamItem",
    "ThrottleOptions",
    "encode_window",
]
