"""deploy/kubernetes/: every manifest is valid against the Kubernetes schemas (offline, with
kubernetes-validate), and every image, command, flag, port, probe and environment variable in them is
one the code really has: the flags are parsed by the programs' own argparse parsers, and the
environment names are compared with what the code reads (found in its source), so renaming a flag,
a port or a variable without the manifests fails here."""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path, PurePosixPath

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
SECRET_TEMPLATE = "secret.example.yaml"
OLDEST = "1.27"  # native gRPC probes are GA from 1.27 on
SCHEMA_VERSIONS = (OLDEST, kubernetes_validate.utils.latest_version())


# --- loading ---------------------------------------------------------------------------------------


@cache
def kustomization() -> dict:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


@cache
def documents() -> tuple[tuple[str, dict], ...]:
    """(file name, document) for every resource of the kustomization, plus the Secret template."""
    files = [*kustomization()["resources"], SECRET_TEMPLATE]
    return tuple((name, doc) for name in files for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc)


def find(kind: str, name: str) -> dict:
    matches = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_spec(deployment: str) -> dict:
    return find("Deployment", deployment)["spec"]["template"]["spec"]


def container(deployment: str, name: str | None = None) -> dict:
    containers = pod_spec(deployment)["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def config_data() -> dict[str, str]:
    return find("ConfigMap", "digits-config")["data"]


def secret_keys() -> set[str]:
    return set(find("Secret", "digits-tokens")["stringData"])


def expanded_args(c: dict) -> list[str]:
    """The container's args with $(VAR) replaced as the kubelet does, from its env and envFrom."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert source["configMapRef"]["name"] == "digits-config"
        env.update(config_data())
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        env[e["name"]] = config_data()[ref["key"]] if ref else e.get("value", "<secret>")
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c.get("args", [])]


def port_number(c: dict, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)


def dockerfile_user_id() -> int:
    return int(re.search(r"useradd .*--uid (\d+)", (REPO / "Dockerfile").read_text()).group(1))


def dockerfile_exposed_ports() -> set[int]:
    return {int(p) for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("EXPOSE")
            for p in line.split()[1:]}


# --- which environment variables the code reads -----------------------------------------------------


def _env_reads(path: Path) -> set[str]:
    """Names the code reads from the environment: a call whose function mentions env (os.environ.get,
    os.getenv, env.get, env_int(env, ...)) given a NAME, or env[NAME]; the NAME written out or a
    module constant (TOKEN_ENV = "DIGITS_API_TOKEN")."""
    tree = ast.parse(path.read_text())
    constants = {
        t.id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for t in node.targets
        if isinstance(t, ast.Name)
    }

    def value(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.Name):
            text = constants.get(node.id)
        else:
            return None
        return text if text and re.fullmatch(r"[A-Z][A-Z0-9_]+", text) else None

    def is_env(node: ast.AST) -> bool:
        return "env" in ast.unparse(node).lower()

    names: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and is_env(node.func):
            names.add(next((v for v in map(value, node.args) if v), None))  # the name, not a default
        elif isinstance(node, ast.Subscript) and is_env(node.value):
            names.add(value(node.slice))
    return {n for n in names if n}


@cache
def env_read_by(*packages: str) -> frozenset[str]:
    return frozenset(n for p in packages for f in (REPO / p).rglob("*.py") for n in _env_reads(f))


PROGRAM_PACKAGES = {  # what each command's process runs
    "digits-server": ("server",),
    "digits-telegram": ("bots", "client"),
    "digits-discord": ("bots", "client"),
}


def test_the_env_scanner_finds_what_the_code_reads():
    """The check below is only as good as this scanner: it must see the ways the code reads variables."""
    assert "DIGITS_API_TOKEN" in env_read_by("server")  # through TOKEN_ENV
    assert {"DIGITS_SERVER", "TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"} <= env_read_by("bots", "client")
    assert "TELEGRAM_BOT_TOKEN" not in env_read_by("server")


# --- the manifests themselves -------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_in_the_folder():
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", SECRET_TEMPLATE}
    assert listed == on_disk
    assert SECRET_TEMPLATE not in listed, "a template in the kustomization would overwrite the real tokens"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version):
    kinds = []
    for name, doc in documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {version}: {exc}")
        kinds.append(doc["kind"])
    assert sorted(set(kinds)) == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service"]
    )


def test_a_broken_manifest_is_caught():
    """The validation above can fail: a misspelled probe field is refused."""
    broken = yaml.safe_load(yaml.safe_dump(find("Deployment", "digits-server")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 50051
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, OLDEST, strict=True)


def test_kustomize_builds_the_base(tmp_path):
    """`kubectl kustomize` (what `kubectl apply -k` runs) renders the base; needs kubectl on PATH."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization was checked by the tests above only")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(rendered) == len(documents()) - 1  # all but the Secret template
    for doc in rendered:
        kubernetes_validate.validate(doc, OLDEST, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "digits"


# --- images and commands ----------------------------------------------------------------------------


def test_images_and_commands_are_the_projects():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    compose_image = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["server"]["image"]
    ours = {i["name"] for i in kustomization()["images"]}
    assert ours == {compose_image.split(":")[0], "digits-model"}
    seen = set()
    for _, doc in documents():
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            image = c["image"]
            seen.add(image)
            if image == "digits":
                assert c["command"][0] in scripts, f"{c['name']}: {c['command'][0]} is no installed command"
                assert c["command"][0] in PROGRAM_PACKAGES
            else:
                assert image in ours or re.fullmatch(r"redis:\d+\.\d+-alpine", image), image
    assert seen == {"digits", "digits-model", "redis:7.4-alpine"}


def test_every_pod_runs_as_non_root_with_a_read_only_filesystem_and_limits():
    for _, doc in documents():
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{c['name']}: {kind}"
        if doc["metadata"]["name"] != "digits-redis":
            assert spec["securityContext"]["runAsUser"] == dockerfile_user_id(), "the Dockerfile's own user"


# --- the server -------------------------------------------------------------------------------------


def server_args():
    from server.cli import build_parser
    from server.flags import validate

    parser = build_parser()
    args = parser.parse_args(expanded_args(container("digits-server", "server")))  # exits on an unknown flag
    # Every value within the server's own bounds; the model file exists only in the pod (init container).
    validate(parser, argparse.Namespace(**{**vars(args), "model": None}), env={})
    return args


def test_server_flags_ports_and_probes_match_the_server():
    from server.cli import SERVICE_NAME

    args = server_args()
    c = container("digits-server", "server")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert args.host == "0.0.0.0"
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    assert set(ports.values()) <= dockerfile_exposed_ports()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = c[probe]["grpc"]  # Kubernetes' native gRPC health probe
        assert port_number(c, grpc_probe["port"]) == args.port, probe
        assert grpc_probe.get("service", "") in ("", SERVICE_NAME), "the server sets health for these names only"
    assert c["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    annotations = find("Deployment", "digits-server")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == args.metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    assert args.workers <= float(c["resources"]["limits"]["cpu"]), "one preprocessing process per CPU at most"


def test_termination_grace_covers_the_drain():
    args = server_args()
    c = container("digits-server", "server")
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + args.drain_delay + args.grace
    assert pod_spec("digits-server")["terminationGracePeriodSeconds"] > needed
    assert args.max_connection_age > 0, "clients of the headless Service must re-resolve to find new pods"


def test_the_model_comes_from_its_own_image_through_a_volume():
    args = server_args()
    spec = pod_spec("digits-server")
    server = container("digits-server", "server")
    init = next(c for c in spec["initContainers"] if c["name"] == "model")
    model = PurePosixPath(str(args.model))
    mounts = {m["name"]: PurePosixPath(m["mountPath"]) for m in server["volumeMounts"]}
    volume = next(name for name, path in mounts.items() if model.parent == path)
    assert volume in {v["name"] for v in spec["volumes"]}
    init_mount = next(PurePosixPath(m["mountPath"]) for m in init["volumeMounts"] if m["name"] == volume)
    assert init["command"][0] == "cp"
    source, target = init["command"][1:]
    assert init_mount / model.name == PurePosixPath(target) and init_mount == model.parent
    copy = re.search(r"^COPY \S+ (\S+)$", (DEPLOY / "model.Dockerfile").read_text(), re.M).group(1)
    assert source == copy, "the init container copies what the model image holds"


def test_the_headless_service_is_what_the_clients_resolve():
    args = server_args()
    service = find("Service", "digits-server")
    assert service["spec"]["clusterIP"] == "None", "headless: DNS returns every pod, the client balances"
    labels = find("Deployment", "digits-server")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert port_number(container("digits-server", "server"), grpc_port["targetPort"]) == args.port
    # A headless Service does no port mapping: the name resolves to pod IPs, so the port must be the pod's.
    assert grpc_port["port"] == args.port
    assert config_data()["DIGITS_SERVER"] == f"dns:///{service['metadata']['name']}:{grpc_port['port']}"


def test_autoscaler_and_disruption_budget_target_the_server():
    deployment = find("Deployment", "digits-server")
    hpa = find("HorizontalPodAutoscaler", "digits-server")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits-server"}
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find("PodDisruptionBudget", "digits-server")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a node drain must be able to proceed"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- the bots ---------------------------------------------------------------------------------------


def test_telegram_runs_in_webhook_mode_behind_its_service():
    from bots.telegram_bot import check_webhook_args, parse_args, telegram_config_from_env

    c = container("digits-telegram")
    args = parse_args(expanded_args(c))
    tokens = find("Secret", "digits-tokens")["stringData"]
    check_webhook_args(args, telegram_config_from_env({**config_data(), **tokens}))
    assert args.webhook_url and args.webhook_url.startswith("https://"), "Telegram posts only to HTTPS webhooks"
    assert args.webhook_url.rstrip("/").endswith("/" + args.url_path)
    assert port_number(c, "webhook") == args.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_number(c, c[probe]["tcpSocket"]["port"]) == args.port
    service = find("Service", "digits-telegram")
    assert port_number(c, service["spec"]["ports"][0]["targetPort"]) == args.port
    assert service["spec"]["selector"].items() <= find("Deployment", "digits-telegram")["spec"]["template"][
        "metadata"
    ]["labels"].items()
    assert find("Deployment", "digits-telegram")["spec"]["replicas"] >= 2


def test_discord_flags_parse_and_it_never_runs_twice():
    from bots.discord_bot import build_parser

    build_parser().parse_args(expanded_args(container("digits-discord")))
    deployment = find("Deployment", "digits-discord")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_redis_url_points_at_the_redis_service():
    url = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", config_data()["DIGITS_REDIS_URL"])
    assert url, config_data()["DIGITS_REDIS_URL"]
    service = find("Service", url.group(1))
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(url.group(2)))
    assert port_number(container(url.group(1)), port["targetPort"]) == 6379


# --- environment ------------------------------------------------------------------------------------


def test_every_environment_variable_is_one_the_code_reads():
    """Each variable a container sets is read by its program (or used in its own args), each
    ConfigMap key by some program, and every Secret key a pod asks for is in the template."""
    every_program = env_read_by("server", "bots", "client", "launcher")
    unread = [k for k in config_data() if k not in every_program and not any(
        f"$({k})" in " ".join(c.get("args", [])) for _, d in documents() if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"])]
    assert not unread, f"ConfigMap keys no program reads: {unread}"
    asked = set()
    for _, doc in documents():
        if doc["kind"] != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if c["image"] != "digits":
                assert "env" not in c and "envFrom" not in c
                continue
            read = env_read_by(*PROGRAM_PACKAGES[c["command"][0]])
            for e in c.get("env", []):
                used_in_args = f"$({e['name']})" in " ".join(c.get("args", []))
                assert e["name"] in read or used_in_args, f"{c['name']} sets {e['name']}, which it never reads"
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["name"] == "digits-tokens"
                    assert ref["secretKeyRef"]["key"] == e["name"]
                    asked.add(e["name"])
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in config_data()
    assert asked == secret_keys(), "the Secret template holds exactly the tokens the pods ask for"
    assert secret_keys() <= every_program


def test_the_settings_and_token_template_pass_the_bots_own_checks():
    """Not only the names: the values in the ConfigMap (and the Secret template's shapes) are ones
    the bots accept at start-up, where a bad one exits 2."""
    from bots.config import core_config_from_env
    from bots.discord_bot import discord_config_from_env
    from bots.telegram_bot import telegram_config_from_env

    tokens = find("Secret", "digits-tokens")["stringData"]
    env = {**config_data(), **tokens}
    core = core_config_from_env(env)
    assert core.digits_server == config_data()["DIGITS_SERVER"] and core.redis_url == config_data()["DIGITS_REDIS_URL"]
    assert discord_config_from_env(env).shard_count == int(config_data()["DISCORD_SHARD_COUNT"])
    telegram_config_from_env(env)
