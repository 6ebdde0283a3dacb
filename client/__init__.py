"""The faultprint Python client: typed sync and asyncio access to a faultprint server."""

from faultprint.client.channels import ChannelSecurity
from faultprint.client.client import (
    AsyncFaultprintClient,
    FaultprintClient,
    ProbeStream,
    StreamItem,
    encode_window,
)
from faultprint.client.errors import ErrorDetails, details
from faultprint.client.throttle import ThrottleOptions

__all__ = [
    "AsyncFaultprintClient",
    "ChannelSecurity",
    "ErrorDetails",
    "FaultprintClient",
    "ProbeStream",
    "StreamItem",
    "ThrottleOptions",
    "details",
    "encode_window",
]
