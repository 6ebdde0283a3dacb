"""The faultprint Python client: typed sync and asyncio access to a faultprint server."""

from client.client import AsyncFaultprintClient, FaultprintClient, encode_window

__all__ = ["AsyncFaultprintClient", "FaultprintClient", "encode_window"]
