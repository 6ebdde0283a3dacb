"""Command-line entry point: ``python -m server --help``."""

from __future__ import annotations

import asyncio
import logging
import sys

from encoder.artifact import ArtifactError
from server.app import serve
from server.settings import ServerSettings, SettingsError


def main(argv: list[str] | None = None) -> int:
    try:
        settings = ServerSettings.from_args(argv)
    except SettingsError as exc:
        print(f"faultprint-server: bad setting: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except ArtifactError as exc:
        logging.getLogger("server").error("cannot serve model %s: %s", settings.model_source, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
