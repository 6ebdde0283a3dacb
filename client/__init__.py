"""The faultprint Python client: typed sync and asyncio access to a faultprint server."""

from client.client import AsyncFaultprintClient, FaultprintClient, ProbeStream, StreamItem, encode_window

__all__ = ["AsyncFaultprintClient", "FaultprintClient", "ProbeStream", "StreamItem", "encode_window"]
