"""The names of the layout before hash tags, mapped to the Redis Cluster layout: every kind of key,
what is left alone, the SCAN pattern, a Redis Cluster refused, and the operator's report."""

from __future__ import annotations

import pytest
import redis

from faultprint.registry.layout import RedisLayout
from faultprint.registry.migration import (
    SHOWN,
    Migration,
    MigrationError,
    migrate,
    new_name,
    old_pattern,
    report_lines,
)

LAYOUT = RedisLayout("fp")

# Every kind of key of the layout before hash tags, and what the layout calls it now.
RENAMES = [
    ("fp:networks", LAYOUT.networks),
    ("fp:events", LAYOUT.events),
    ("fp:models", LAYOUT.models),
    ("fp:replicas", LAYOUT.replicas),
    ("fp:eval_sets", LAYOUT.eval_sets),
    ("fp:store", LAYOUT.store),
    ("fp:incidents", LAYOUT.incidents),
    ("fp:incidents:onap", LAYOUT.onap_publisher),
    ("fp:incidents:onap:dead", LAYOUT.onap_dead_letters),
    ("fp:model:serving", LAYOUT.serving_version),
    ("fp:model:candidate", LAYOUT.candidate_version),
    ("fp:model:history", LAYOUT.history),
    ("fp:model:v20240101-abc:artifact", LAYOUT.model_artifact("v20240101-abc")),
    ("fp:model:v20240101-abc:meta", LAYOUT.model_meta("v20240101-abc")),
    ("fp:model:v20240101-abc:shadow", LAYOUT.model_shadow("v20240101-abc")),
    ("fp:model:serving:meta", LAYOUT.model_meta("serving")),
    ("fp:net:metro-eu:cases", LAYOUT.cases("metro-eu")),
    ("fp:net:metro-eu:windows", LAYOUT.windows("metro-eu")),
    ("fp:net:metro-eu:traffic", LAYOUT.traffic("metro-eu")),
    ("fp:net:metro-eu:embedding_versions", LAYOUT.embedding_versions("metro-eu")),
    ("fp:net:metro-eu:request:req_1.a", LAYOUT.request("metro-eu", "req_1.a")),
    ("fp:net:metro-eu:incidents:open", LAYOUT.open_incidents("metro-eu")),
    ("fp:net:metro-eu:incidents:acks", LAYOUT.incident_acks("metro-eu")),
    ("fp:emb:v1:metro-eu", LAYOUT.embeddings("v1", "metro-eu")),
    ("fp:emb:v1~0a1b2c3d4e5f:metro-eu", LAYOUT.embeddings("v1~0a1b2c3d4e5f", "metro-eu")),
    ("fp:baseline:v1:metro-eu", LAYOUT.baseline("v1", "metro-eu")),
    ("fp:diag:metro-eu:pcscf-1", LAYOUT.node("metro-eu", "pcscf-1")),
    ("fp:node:metro-eu:pcscf-1:window", LAYOUT.node_window("metro-eu", "pcscf-1")),
    ("fp:node:metro-eu:pcscf-1:condition", LAYOUT.node_condition("metro-eu", "pcscf-1")),
    ("fp:node:metro-eu:pcscf-1:incidents", LAYOUT.node_incidents("metro-eu", "pcscf-1")),
]


@pytest.mark.parametrize(("old", "new"), RENAMES, ids=[old for old, _ in RENAMES])
def test_every_kind_of_old_key_gets_its_layout_name(old: str, new: str) -> None:
    assert new_name(LAYOUT, old) == new


def test_every_new_name_carries_the_hash_tag_of_its_kind() -> None:
    for old, new in RENAMES:
        network = old.startswith(("fp:net:", "fp:emb:", "fp:baseline:", "fp:diag:", "fp:node:"))
        assert new.startswith("{fp:net:metro-eu}:" if network else "{fp}:"), old


def test_a_prefix_with_colons_maps_only_its_own_keys() -> None:
    layout = RedisLayout("acme:prod")
    assert new_name(layout, "acme:prod:net:n1:cases") == layout.cases("n1")
    assert new_name(layout, "acme:prod:model:v1:meta") == layout.model_meta("v1")
    assert new_name(layout, "acme:production:networks") is None


@pytest.mark.parametrize(
    "old",
    [
        "other:networks",  # another deployment
        "fp",  # the prefix alone
        "fp:",
        "fp:unknown",  # no such kind
        "fp:networks:extra",  # a known name with more parts
        "fp:model:v1",  # a version without its kind
        "fp:model:v1:weights",
        "fp:model:-v1:meta",  # an id that breaks the id rule
        "fp:net:metro-eu",
        "fp:net:metro-eu:outbox",  # the outbox is newer than the layout before hash tags
        "fp:net:metro-eu:request",
        "fp:net:metro-eu:incidents:closed",
        "fp:net::cases",
        "fp:net:metro eu:cases",
        "fp:emb:v1:metro-eu:extra",
        "fp:emb:v1~a~b:metro-eu",  # at most one digest
        "fp:emb:~abc:metro-eu",
        "fp:baseline:v1",
        "fp:diag:metro-eu",
        "fp:node:metro-eu:pcscf-1",
        "fp:node:metro-eu:pcscf-1:state",
        "{fp}:networks",  # already in the new layout
        "{fp:net:metro-eu}:cases",
    ],
)
def test_a_name_no_rule_maps_is_left_alone(old: str) -> None:
    assert new_name(LAYOUT, old) is None


def test_the_scan_pattern_escapes_glob_characters_of_the_prefix() -> None:
    assert old_pattern("faultprint") == "faultprint:*"
    assert old_pattern("a*b?[c]\\d") == "a\\*b\\?\\[c\\]\\\\d:*"


def test_a_redis_cluster_is_refused_before_any_command() -> None:
    cluster = object.__new__(redis.RedisCluster)  # never connects: refused on its type
    with pytest.raises(MigrationError, match="single Redis"):
        migrate(cluster, "fp")


def test_the_report_counts_and_lists_the_first_names() -> None:
    renamed = [(f"fp:net:n{i}:cases", LAYOUT.cases(f"n{i}")) for i in range(SHOWN + 5)]
    conflict = [("fp:networks", LAYOUT.networks)]
    lines = report_lines(Migration(dry_run=True, renamed=renamed, conflicts=conflict, unknown=["fp:odd"]))
    assert lines[0] == f"would rename {SHOWN + 5} keys to the Redis Cluster layout"
    assert lines[1] == f"  fp:net:n0:cases -> {LAYOUT.cases('n0')}"
    assert lines[SHOWN + 1] == "  ... and 5 more"
    assert lines[SHOWN + 2 :] == [
        "1 would be left (their new names exist)",
        f"  fp:networks (its new name {LAYOUT.networks} exists)",
        "1 not recognised",
        "  fp:odd",
    ]
    done = report_lines(Migration(dry_run=False, renamed=renamed, vanished=["fp:diag:n:x"]))
    assert done == [
        f"renamed {SHOWN + 5} keys to the Redis Cluster layout",
        "0 left (their new names exist)",
        "0 not recognised",
        "1 expired before their rename",
    ]
