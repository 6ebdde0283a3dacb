"""Command-line entry point: ``python -m faultprint.server --help``."""

from __future__ import annotations

import asyncio
import logging
import sys

from faultprint.encoder.artifact import ArtifactError
from faultprint.server.app import StartupError, serve
from faultprint.server.settings import ServerSettings, SettingsError, options_table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--options-table" in args:
        print(options_table(), end="")
        return 0
    try:
        settings = ServerSettings.from_args(args)
    except SettingsError as exc:
        print(f"faultprint-server: bad setting: {exc}", file=sys.stderr)
        return 2
    worker = f" worker-{settings.worker_index}" if settings.worker_index >= 0 else ""
    log_format = f"%(asctime)s %(levelname)s{worker} %(name)s: %(message)s"
    logging.basicConfig(level=settings.log_level, format=log_format)
    if settings.supervises:
        from faultprint.server.supervisor import supervise

        return supervise(settings, args)
    try:
        asyncio.run(serve(settings))
    except ArtifactError as exc:
        logging.getLogger("server").error("cannot serve model %s: %s", settings.model_source, exc)
        return 1
    except StartupError as exc:
        print(f"faultprint-server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
