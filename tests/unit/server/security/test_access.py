"""The access policy's pure logic: parsing, who a call comes from, what each role and network allows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from faultprint.server.rpc.errors import PermissionDenied, Unauthenticated
from faultprint.server.security.access import METHOD_ROLES, AccessPolicy, Caller, PolicyError, PolicyFile

PROBE_TOKEN = "probe-secret"
POLICY = f"""
[[caller]]
name = "probe-eu"
role = "probe"
networks = ["ims-eu"]
token_sha256 = ["{hashlib.sha256(PROBE_TOKEN.encode()).hexdigest()}"]
certificate_names = ["probe-eu.example"]

[[caller]]
name = "ops"
role = "operator"
networks = ["*"]
certificate_names = ["ops.example"]
"""


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_a_token_names_its_caller_before_any_certificate() -> None:
    policy = AccessPolicy.parse(POLICY)
    certificate = {"x509_common_name": [b"ops.example"]}
    assert policy.authenticate(_bearer(PROBE_TOKEN), certificate).name == "probe-eu"
    assert policy.authenticate([], certificate).name == "ops"
    assert (
        policy.authenticate([], {"x509_subject_alternative_name": [b"probe-eu.example"]}).name == "probe-eu"
    )


@pytest.mark.parametrize(
    ("metadata", "context", "reason"),
    [
        ([], {}, "no credentials"),
        (_bearer("guess"), {}, "not one the access policy knows"),
        ([("authorization", "Basic abc")], {}, "Bearer <token>"),
        ([], {"x509_common_name": [b"stranger.example"]}, "names no caller"),
    ],
)
def test_unknown_callers_are_unauthenticated(metadata, context, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Unauthenticated, match=reason):
        AccessPolicy.parse(POLICY).authenticate(metadata, context)


def test_roles_nest_and_unlisted_methods_need_admin() -> None:
    probe, operator, admin = (Caller(r, r, None) for r in ("probe", "operator", "admin"))
    classify = "/faultprint.v1.ProbeService/ClassifyWindow"
    enrol = "/faultprint.v1.ReferenceCaseService/CreateReferenceCase"
    unlisted = "/faultprint.v1.ModelService/SomethingNew"
    assert METHOD_ROLES[classify] == "probe" and METHOD_ROLES[enrol] == "operator"
    assert [c.may_call(classify) for c in (probe, operator, admin)] == [True, True, True]
    assert [c.may_call(enrol) for c in (probe, operator, admin)] == [False, True, True]
    assert [c.may_call(unlisted) for c in (probe, operator, admin)] == [False, False, True]


def test_networks_bound_a_caller_and_an_empty_network_needs_every_network() -> None:
    scoped = Caller("probe-eu", "probe", frozenset({"ims-eu"}))
    assert scoped.refusal("ims-eu") is None
    assert isinstance(scoped.refusal("ims-us"), PermissionDenied)
    assert isinstance(scoped.refusal(""), PermissionDenied)
    assert Caller("ops", "operator", None).refusal("") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[[caller]\n", "not valid TOML"),
        ("[server]\nport = 1\n", "unknown tables"),
        ('[[caller]]\nname = "a"\nrole = "root"\nnetworks = ["*"]\ncertificate_names = ["a"]\n', "role is 'root'"),
        ('[[caller]]\nname = "a"\nrole = "probe"\nnetworks = []\ncertificate_names = ["a"]\n', "networks must"),
        ('[[caller]]\nname = "a"\nrole = "probe"\nnetworks = ["n"]\n', "needs token_sha256 or"),
        ('[[caller]]\nname = "a"\nrole = "probe"\nnetworks = ["n"]\ntoken_sha256 = ["abc"]\n', "64 characters"),
        ('[[caller]]\nname = "a"\nrole = "probe"\nnetworks = ["n"]\ncertificate_names = ["a"]\nextra = 1\n',
         "unknown keys"),
        (POLICY + '[[caller]]\nname = "b"\nrole = "admin"\nnetworks = ["*"]\ncertificate_names = ["ops.example"]\n',
         "names both 'ops' and 'b'"),
    ],
)  # fmt: skip
def test_a_policy_that_cannot_be_used_says_why(text: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        AccessPolicy.parse(text)


def test_the_policy_file_is_reloaded_on_change_and_a_broken_change_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "access.toml"
    path.write_text(POLICY)
    now = [0.0]
    watched = PolicyFile(path, clock=lambda: now[0])
    first = watched.current()
    path.write_text(POLICY.replace("ops.example", "ops2.example"))
    assert watched.current() is first  # not looked at again within the interval
    now[0] += 2
    assert "ops2.example" in watched.current().by_certificate_name
    path.write_text("[[caller]\n")
    now[0] += 2
    assert "ops2.example" in watched.current().by_certificate_name
