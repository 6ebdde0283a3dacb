"""A bare grpc.aio server that only reads StreamMinutes requests and acknowledges them: the floor
a minute stream's server CPU is compared against (benchmarks/minute_streams.py cost).

``python -m benchmarks.bare_minutes --port N`` serves until SIGTERM. It decodes each request
(grpc's own deserializer, as the real server), counts its minutes, and answers with the
same acknowledgement message the real server sends, doing nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from faultprint.v1 import probe_service_pb2, probe_service_pb2_grpc


class BareProbes(probe_service_pb2_grpc.ProbeServiceServicer):
    async def StreamMinutes(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for request in request_iterator:
            yield probe_service_pb2.StreamMinutesResponse(
                sequence=request.sequence, accepted=len(request.minutes)
            )


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
    probe_service_pb2_grpc.add_ProbeServiceServicer_to_server(BareProbes(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
