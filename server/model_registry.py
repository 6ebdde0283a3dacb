"""The model registry in Redis: trainers publish versioned artifacts, every replica fetches them.

Only the Redis connection is shared between trainer and servers: the packed artifact,
its sha256 and metadata live under the deployment's prefix, and promotion appends
a ``model_serving`` event to the change stream.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import cast

import redis
import redis.asyncio as aioredis

from encoder.artifact import (
    ArtifactError,
    ModelMetadata,
    pack_artifact,
    read_metadata,
    sha256_hex,
    unpack_artifact,
)
from server.redis_layout import EVENTS_MAX_LEN, RedisLayout


def publish_artifact(
    client: redis.Redis, layout: RedisLayout, artifact_dir: Path, promote: bool = True
) -> ModelMetadata:
    """Stores an artifact directory in the registry and, if promote, makes it the serving version."""
    metadata = read_metadata(artifact_dir)
    blob = pack_artifact(artifact_dir)
    pipe = client.pipeline(transaction=True)
    pipe.set(layout.model_artifact(metadata.version), blob)
    pipe.hset(
        layout.model_meta(metadata.version),
        mapping={"metadata": metadata.to_json(), "sha256": sha256_hex(blob), "published_unix_s": time.time()},
    )
    pipe.zadd(layout.models, {metadata.version: time.time()})
    if promote:
        pipe.set(layout.serving_version, metadata.version)
        pipe.xadd(
            layout.events,
            {"kind": "model_serving", "version": metadata.version, "origin": "trainer"},
            maxlen=EVENTS_MAX_LEN,
            approximate=True,
        )
    pipe.execute()
    return metadata


async def serving_version(client: aioredis.Redis, layout: RedisLayout) -> str | None:
    raw = await client.get(layout.serving_version)
    return None if raw is None else cast(bytes, raw).decode()


async def fetch_artifact(client: aioredis.Redis, layout: RedisLayout, version: str, cache_dir: Path) -> Path:
    """Downloads, verifies and unpacks a version into cache_dir/version; returns that directory."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(layout.model_meta(version), "sha256")
    pipe.get(layout.model_artifact(version))
    digest, blob = await pipe.execute()
    if digest is None or blob is None:
        raise ArtifactError(f"model version {version!r} is not in the registry")
    # Unpacking tens of megabytes is file work: keep it off the event loop.
    return await asyncio.to_thread(_install, bytes(blob), bytes(digest).decode(), version, cache_dir)


def _install(blob: bytes, digest: str, version: str, cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / version
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=cache_dir))
    try:
        metadata = unpack_artifact(blob, digest, staging)
        if metadata.version != version:
            raise ArtifactError(f"artifact stored as {version!r} says it is {metadata.version!r}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
