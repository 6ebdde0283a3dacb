"""Connects to a deployment's Redis, a single server or a Redis Cluster, from one URL.

The URL names any one node; a node that reports cluster_enabled is answered with a
cluster client that finds the others and routes each key to its slot's master. Every
faultprint key carries a hash tag (registry/layout.py), so scripts and transactions
stay within one slot either way.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
import redis.exceptions

from faultprint.registry.layout import RedisLayout

SyncRedis: TypeAlias = "redis.Redis | redis.RedisCluster"
AsyncRedis: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"


# CLUSTER INFO is in no ACL category a faultprint user is denied (INFO is @dangerous).
_CLUSTER_INFO = ("CLUSTER", "INFO")


def _refused_as_single(exc: redis.exceptions.ResponseError) -> bool:
    """A server without cluster support refuses CLUSTER INFO; a denied ACL user is not an answer."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        raise exc
    return False


def connect(url: str, cluster: bool | None = None, **options: Any) -> SyncRedis:
    """A client of the Redis (or, cluster True, Redis Cluster) at url; cluster None asks the
    node. options go to redis-py's client."""
    clustered = cluster if cluster is not None else _asks_cluster(url, options)
    if not clustered:
        return redis.Redis.from_url(url, **options)
    return redis.RedisCluster.from_url(url, **options)


def _asks_cluster(url: str, options: dict[str, Any]) -> bool:
    with redis.Redis.from_url(url, **options) as probe:
        try:
            probe.execute_command(*_CLUSTER_INFO)
        except redis.exceptions.ResponseError as exc:
            return _refused_as_single(exc)
    return True


async def connect_async(url: str, cluster: bool | None = None, **options: Any) -> AsyncRedis:
    """The asyncio client of the Redis (or Redis Cluster) at url, as connect()."""
    clustered = cluster if cluster is not None else await _asks_cluster_async(url, options)
    if not clustered:
        return aioredis.Redis.from_url(url, **options)
    return aioredis.RedisCluster.from_url(url, **options)


async def _asks_cluster_async(url: str, options: dict[str, Any]) -> bool:
    probe = aioredis.Redis.from_url(url, **options)
    try:
        await probe.execute_command(*_CLUSTER_INFO)
    except redis.exceptions.ResponseError as exc:
        return _refused_as_single(exc)
    finally:
        await probe.aclose()
    return True


def delete_deployment(client: SyncRedis, layout: RedisLayout) -> int:
    """Deletes every key of the deployment (on every master of a cluster); returns how many."""
    keys = [key for pattern in layout.patterns() for key in client.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    return len(keys)
