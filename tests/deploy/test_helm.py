"""The Helm chart helm/tandem, with the real helm binary (scripts/fetch-helm puts it in .venv/bin):
lint, rendered manifests valid for Kubernetes, the rendered tandem.toml loaded by the program's
own settings loader, values and schema in step with the Settings model, the chart's checks."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import workers
from orchestrator.lifecycle import Timing
from orchestrator.settings import ConfigError, ContainerPolicy, Rule, Settings, load

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tandem"
HELM = Path(sys.executable).parent / "helm"
KUBE_VERSIONS = ("1.29.0", "1.33.0")
NODE = "node-1"
SSH_DIR = "/etc/tandem/ssh"

# Where the chart's settings differ from the program's defaults (values.yaml says why).
CHART_DIFFERS = {"host", "api_host", "api_token", "docker_host", "lxd_socket"}
# terminationGracePeriodSeconds must cover stop_timeout, the supervisor's kill grace and this.
GRACE_MARGIN = 5

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----"
KNOWN_HOSTS = "peer ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1234567890abcdefghijklmnopqrstuvwxyzABCD"
TOKEN = "a-token-given-in-the-values-0123456789"

# Every section away from its default.
CUSTOM: dict[str, Any] = {
    "settings": {
        "state_dir": "/srv/tandem-state",
        "defaults": {
            "enable": True,
            "dest": "peer:/srv/tandem/{host}/{container}/{mount}",
            "delay": 2.5,
            "exclude": [r"\.tmp$"],
            "split-brain": "keep-both",
        },
        "rules": [
            {"match": "db-*", "runtime": "docker", "delay": 10, "split-brain": "manual", "max-lag": 300},
            {"match": "scratch-*", "runtime": "*", "enable": False},
        ],
        "docker": False,
        "lxd": True,
        "lxd_dir": "/var/snap/lxd/common/lxd",
        "dest_roots": ["peer:/srv/tandem"],
        "rsync_args": ["--bwlimit=10m"],
        "heartbeat": 2,
        "heartbeat_timeout": 10,
        "stop_timeout": 50,
        "restart_delay": 2,
        "restart_delay_max": 120,
        "healthy_after": 30,
        "inotify_warn": 0.5,
        "log_level": "debug",
        "peer_name": "peer-b",
        "backup_dir": "/srv/tandem-backup",
        "modify_window": 1,
        "api_port": 9000,
        "api_token": TOKEN,
    },
    "ssh": {"privateKey": KEY, "knownHosts": KNOWN_HOSTS},
    "hostPaths": {
        "lxdDir": "/var/snap/lxd/common/lxd",
        "state": "/srv/tandem-state",
        "extra": ["/srv/binds"],
    },
    "image": {"repository": "registry.example/tandem", "tag": "dev", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "terminationGracePeriodSeconds": 80,
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
    "hostNetwork": True,
    "service": {"type": "NodePort", "port": 80, "nodePort": 30765, "annotations": {"team": "storage"}},
    "podAnnotations": {"example.com/owner": "storage"},
    "podLabels": {"tier": "sync"},
    "priorityClassName": "system-node-critical",
    "nodeSelector": {"tandem/enabled": "true"},
    "tolerations": [{"operator": "Exists"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
                ]
            }
        }
    },
}

Helm = Callable[..., subprocess.CompletedProcess[str]]
Manifests = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run helm with its cache, config and data in a temporary directory."""
    if not HELM.exists():
        pytest.fail(f"no helm at {HELM}: run scripts/fetch-helm")
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ}
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HELM), *args], env=env, capture_output=True, text=True, timeout=60)
        if check:
            assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    return run


@pytest.fixture(scope="module")
def custom_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "custom.yaml"
    path.write_text(yaml.safe_dump(CUSTOM))
    return path


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    out = helm("template", "tandem", str(CHART), "--namespace", "sync", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def values_file(directory: Path, values: dict[str, Any]) -> str:
    """VALUES as a new values file in DIRECTORY (no --set quoting or typing surprises)."""
    path = directory / f"values-{len(list(directory.glob('values-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def by_kind(docs: list[dict[str, Any]]) -> Manifests:
    kinds: Manifests = {}
    for doc in docs:
        assert doc["kind"] not in kinds, f"two {doc['kind']}s"
        kinds[doc["kind"]] = doc
    return kinds


@pytest.fixture(scope="module")
def default_docs(helm: Helm) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def custom_docs(helm: Helm, custom_values: Path) -> list[dict[str, Any]]:
    return render(helm, "-f", str(custom_values))


@pytest.fixture(params=["default", "custom"])
def case(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, request.getfixturevalue(f"{request.param}_docs")


def container(kinds: Manifests) -> dict[str, Any]:
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]  # type: ignore[no-any-return]


def dockerfile_env(text: str) -> dict[str, str]:
    """The variables a Dockerfile's ENV instructions set (KEY=VALUE and legacy KEY VALUE forms;
    comment lines dropped, continuation lines joined)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    env: dict[str, str] = {}
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() != "ENV" or not rest.strip():
            continue
        words = shlex.split(rest)
        if "=" in words[0]:
            env.update(word.partition("=")[::2] for word in words)
        else:
            key, _, value = rest.strip().partition(" ")
            env[key] = value.strip()
    return env


def pod_env(kinds: Manifests) -> dict[str, str]:
    """The container's environment as it would be on node NODE (the image sets no TANDEM_*)."""
    secret = kinds["Secret"]
    env: dict[str, str] = {}
    for var in container(kinds)["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
            env[var["name"]] = NODE
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def load_in_pod(kinds: Manifests, directory: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings `tandem serve --config /etc/tandem/tandem.toml` reads in the rendered pod
    (orchestrator.settings.load: a ConfigError where the pod would exit 2)."""
    for var in list(os.environ):
        if var.startswith("TANDEM_"):
            monkeypatch.delenv(var)
    for var, value in pod_env(kinds).items():
        monkeypatch.setenv(var, value)
    config = directory / f"tandem-{len(list(directory.glob('tandem-*.toml')))}.toml"
    config.write_text(kinds["ConfigMap"]["data"]["tandem.toml"])
    return load(str(config))


@pytest.fixture
def loaded(
    case: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Manifests, Settings]]:
    """The settings `tandem serve` reads in the rendered pod."""
    name, docs = case
    kinds = by_kind(docs)
    yield name, kinds, load_in_pod(kinds, tmp_path, monkeypatch)


# --- lint and Kubernetes schemas -------------------------------------------------------------


@pytest.mark.parametrize("values", ["default", "custom"])
def test_helm_lint_strict_passes(helm: Helm, custom_values: Path, values: str) -> None:
    """helm lint --strict passes with the default values and with every section changed."""
    args = ["-f", str(custom_values)] if values == "custom" else []
    out = helm("lint", "--strict", str(CHART), *args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_rendered_manifests_are_valid_kubernetes(
    case: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    """Every rendered document validates against the Kubernetes schemas (strict: no unknown
    fields), and the chart renders exactly a DaemonSet, a Service, a ConfigMap and a Secret."""
    _, docs = case
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    assert sorted(doc["kind"] for doc in docs) == ["ConfigMap", "DaemonSet", "Secret", "Service"]


# --- the rendered settings -------------------------------------------------------------------


def test_rendered_config_loads_with_the_program_loader(
    loaded: tuple[str, Manifests, Settings],
) -> None:
    """The rendered tandem.toml plus the pod's environment load with orchestrator.settings.load:
    with the default values every setting is the program's default but the chart's documented
    differences; with custom values every setting is the one given."""
    name, kinds, settings = loaded
    given = CUSTOM if name == "custom" else yaml.safe_load((CHART / "values.yaml").read_text())
    given = given["settings"]
    dumped = settings.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert settings.api_token is not None
    secret_token = base64.b64decode(kinds["Secret"]["data"]["api-token"]).decode()
    assert settings.api_token.get_secret_value() == secret_token
    assert settings.host == NODE  # TANDEM_HOST: spec.nodeName
    if name == "default":
        assert len(secret_token) == 32 and secret_token.isalnum()  # generated
        assert settings.api_host == "0.0.0.0"
        assert settings.docker_host == "unix:///var/run/docker.sock"  # the mounted socket
        assert settings.lxd_socket == "/var/lib/lxd/unix.socket"  # in the lxd_dir mount
        assert settings.rsh is None
        for field, info in Settings.model_fields.items():
            if field not in CHART_DIFFERS:
                assert getattr(settings, field) == info.get_default(call_default_factory=True), field
    else:
        assert secret_token == TOKEN
        for key, value in given.items():
            if key != "api_token":
                assert dumped[key] == value, key
        assert settings.defaults.delay == 2.5 and settings.rules[0].max_lag == 300
        assert settings.docker_host is None  # docker: false
        assert settings.lxd_socket == "/var/snap/lxd/common/lxd/unix.socket"


def test_api_token_is_never_in_the_configmap(custom_docs: list[dict[str, Any]]) -> None:
    """A token given in the values is in the Secret only, never in the ConfigMap."""
    kinds = by_kind(custom_docs)
    assert "api_token" not in kinds["ConfigMap"]["data"]["tandem.toml"]
    assert TOKEN not in yaml.safe_dump(kinds["ConfigMap"]) + yaml.safe_dump(kinds["DaemonSet"])


def test_empty_settings_are_left_out_and_false_and_zero_kept(helm: Helm) -> None:
    """Null and empty settings are absent from tandem.toml (TOML has no null); false and 0 are not."""
    kinds = by_kind(
        render(
            helm,
            *("--set", "settings.docker=false", "--set", "settings.modify_window=0"),
            *("--set", "settings.docker_host=null", "--set", "settings.rsh="),
        )
    )
    text = kinds["ConfigMap"]["data"]["tandem.toml"]
    keys = {line.split(" = ")[0] for line in text.splitlines() if " = " in line}
    assert {"docker", "modify_window"} <= keys
    assert not keys & {"docker_host", "rsh", "host", "api_token", "peer_name", "backup_dir", "rules"}
    assert "docker = false" in text and "modify_window = 0" in text


def test_ssh_files_are_mounted_and_used_by_rsh(loaded: tuple[str, Manifests, Settings]) -> None:
    """ssh.privateKey and ssh.knownHosts land in the Secret, mounted read-only with mode 0400 at
    /etc/tandem/ssh, and the chart's rsh uses both with host keys checked."""
    name, kinds, settings = loaded
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container(kinds)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if name == "default":
        assert "ssh" not in mounts and "ssh" not in volumes and set(kinds["Secret"]["data"]) == {"api-token"}
        return
    data = kinds["Secret"]["data"]
    assert base64.b64decode(data["id"]).decode() == KEY + "\n"
    assert base64.b64decode(data["known_hosts"]).decode() == KNOWN_HOSTS + "\n"
    assert mounts["ssh"] == {"name": "ssh", "mountPath": SSH_DIR, "readOnly": True}
    assert volumes["ssh"]["secret"]["defaultMode"] == 0o400
    assert {item["path"] for item in volumes["ssh"]["secret"]["items"]} == {"id", "known_hosts"}
    assert settings.rsh is not None
    argv = shlex.split(settings.rsh)
    assert argv[:3] == ["ssh", "-i", f"{SSH_DIR}/id"]
    assert f"UserKnownHostsFile={SSH_DIR}/known_hosts" in argv and "StrictHostKeyChecking=yes" in argv


# --- the pod ---------------------------------------------------------------------------------


def test_probes_env_and_command(case: tuple[str, list[dict[str, Any]]]) -> None:
    """The container runs `tandem serve --config /etc/tandem/tandem.toml`; liveness on /healthz and
    readiness on /readyz at the API port; TANDEM_API_TOKEN from the Secret; TANDEM_HOST from
    spec.nodeName; no other setting in the environment (it would shadow tandem.toml: state_dir
    comes from the ConfigMap alone); the config checksum on the pod template."""
    name, docs = case
    kinds = by_kind(docs)
    box = container(kinds)
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    port = 9000 if name == "custom" else 8765
    assert box["args"] == ["serve", "--config", "/etc/tandem/tandem.toml"]
    assert box["ports"] == [{"name": "api", "containerPort": port, "protocol": "TCP"}]
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    env = {var["name"]: var for var in box["env"]}
    assert env["TANDEM_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": kinds["Secret"]["metadata"]["name"],
        "key": "api-token",
    }
    assert env["TANDEM_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert set(env) == {"TANDEM_HOST", "TANDEM_API_TOKEN", "TANDEM_API_URL"}
    shadowing = {name.removeprefix("TANDEM_").lower() for name in env} & set(Settings.model_fields)
    assert shadowing == {"host", "api_token"}, "a setting in the environment would shadow tandem.toml"
    assert pod["shareProcessNamespace"] is True  # the pause container reaps orphans
    config = next(m for m in box["volumeMounts"] if m["name"] == "config")
    assert config["mountPath"] == "/etc/tandem/tandem.toml" and config["subPath"] == "tandem.toml"
    annotations = kinds["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64
    service = kinds["Service"]["spec"]
    assert service["ports"][0]["targetPort"] == "api"
    assert service["selector"] == kinds["DaemonSet"]["spec"]["selector"]["matchLabels"]


def test_default_pod(default_docs: list[dict[str, Any]]) -> None:
    """Defaults: image tandem:APPVERSION, root, grace 45 s, RollingUpdate, resources, no host
    network, a ClusterIP Service, the Docker and LXD paths and the state dir mounted."""
    kinds = by_kind(default_docs)
    spec = kinds["DaemonSet"]["spec"]
    pod = spec["template"]["spec"]
    box = container(kinds)
    assert box["image"] == f"tandem:{workers.__version__}"
    assert box["securityContext"]["runAsUser"] == 0
    assert pod["terminationGracePeriodSeconds"] == 45
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert box["resources"]["requests"] and box["resources"]["limits"]["memory"]
    assert "hostNetwork" not in pod and "dnsPolicy" not in pod
    assert kinds["Service"]["spec"]["type"] == "ClusterIP"
    mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
    hosts = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert mounts["docker-socket"] == hosts["docker-socket"]["path"] == "/var/run/docker.sock"
    assert mounts["docker-volumes"] == hosts["docker-volumes"]["path"] == "/var/lib/docker/volumes"
    assert mounts["lxd"] == hosts["lxd"]["path"] == "/var/lib/lxd"
    assert mounts["state"] == hosts["state"]["path"] == "/var/lib/tandem"
    assert hosts["state"]["type"] == "DirectoryOrCreate"
    assert {hosts[n]["type"] for n in ("docker-socket", "docker-volumes", "lxd")} == {""}


def test_custom_pod(custom_docs: list[dict[str, Any]]) -> None:
    """Custom values: no Docker paths with docker false, LXD's directory at settings.lxd_dir, extra
    host paths, host network with ClusterFirstWithHostNet, the NodePort Service, scheduling."""
    kinds = by_kind(custom_docs)
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    box = container(kinds)
    mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
    hosts = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert not {"docker-socket", "docker-volumes"} & (mounts.keys() | hosts.keys())
    assert mounts["lxd"] == hosts["lxd"] == "/var/snap/lxd/common/lxd"
    assert mounts["state"] == hosts["state"] == "/srv/tandem-state"
    assert mounts["extra-0"] == hosts["extra-0"] == "/srv/binds"
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["terminationGracePeriodSeconds"] == 80
    assert box["image"] == "registry.example/tandem:dev" and box["imagePullPolicy"] == "Always"
    assert box["resources"] == CUSTOM["resources"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod[key] == CUSTOM[key], key
    template = kinds["DaemonSet"]["spec"]["template"]["metadata"]
    assert template["annotations"]["example.com/owner"] == "storage"
    assert template["labels"]["tier"] == "sync"
    service = kinds["Service"]["spec"]
    assert service["type"] == "NodePort"
    assert service["ports"][0]["port"] == 80 and service["ports"][0]["nodePort"] == 30765


def test_config_change_rolls_the_pods(helm: Helm, default_docs: list[dict[str, Any]]) -> None:
    """The checksum annotation follows tandem.toml, so a settings change replaces the pods."""

    def checksum(docs: list[dict[str, Any]]) -> str:
        annotations = by_kind(docs)["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    changed = render(helm, "--set", "settings.log_level=debug")
    assert checksum(changed) != checksum(default_docs)
    assert checksum(render(helm)) == checksum(default_docs)


def test_pod_template_carries_nothing_derived_from_secrets(helm: Helm, tmp_path: Path) -> None:
    """Changing the token or the ssh key changes the Secret only, not the DaemonSet: no hash of
    secret material on the pods (anyone who can read pods could test guesses of a weak token
    against it offline). A new token needs `kubectl rollout restart`, as NOTES.txt says."""

    def kinds(token: str, key: str) -> Manifests:
        values = {"settings": {"api_token": token}, "ssh": {"privateKey": key, "knownHosts": KNOWN_HOSTS}}
        return by_kind(render(helm, "-f", values_file(tmp_path, values)))

    one, two = kinds(TOKEN, KEY), kinds("another-token-9876543210", KEY.replace("not-a-real", "other"))
    assert one["Secret"]["data"]["api-token"] != two["Secret"]["data"]["api-token"]
    assert one["Secret"]["data"]["id"] != two["Secret"]["data"]["id"]
    assert one["DaemonSet"] == two["DaemonSet"]
    assert list(one["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]) == ["checksum/config"]
    assert "kubectl rollout restart" in (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl rollout restart" in (CHART / "values.yaml").read_text()


def test_dockerfile_sets_no_tandem_variable() -> None:
    """The image sets no TANDEM_* variable: the environment beats the config file, so one would
    silently override the tandem.toml the chart mounts (e.g. a TANDEM_STATE_DIR away from the
    hostPath the state is kept in)."""
    env = dockerfile_env((ROOT / "Dockerfile").read_text())
    assert "PATH" in env  # the parser sees the ENV instructions
    assert not [var for var in env if var.startswith("TANDEM_")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ENV A=1 \\\n    TANDEM_STATE_DIR=/x\n", {"A": "1", "TANDEM_STATE_DIR": "/x"}),
        ("# ENV TANDEM_X=1\nenv TANDEM_HOST h\n", {"TANDEM_HOST": "h"}),
        ('ENV TANDEM_LOG_LEVEL="debug" P=/a:$P\n', {"TANDEM_LOG_LEVEL": "debug", "P": "/a:$P"}),
    ],
)
def test_dockerfile_env_parser(text: str, expected: dict[str, str]) -> None:
    """dockerfile_env finds variables in both ENV forms and across continuation lines."""
    assert dockerfile_env(text) == expected


def test_sockets_follow_the_mounts(helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty docker_host and lxd_socket name the sockets the chart mounts: Docker's at its host
    path hostPaths.dockerSocket, LXD's in hostPaths.lxdDir mounted at settings.lxd_dir; values
    given are kept; neither is set for a runtime not followed."""

    def pod(values: dict[str, Any]) -> tuple[dict[str, str], Settings]:
        kinds = by_kind(render(helm, "-f", values_file(tmp_path, values)))
        mounts = {m["name"]: m["mountPath"] for m in container(kinds)["volumeMounts"]}
        return mounts, load_in_pod(kinds, tmp_path, monkeypatch)

    snap = "/var/snap/lxd/common/lxd"
    mounts, settings = pod(
        {"hostPaths": {"dockerSocket": "/run/docker.sock", "lxdDir": snap}, "settings": {"lxd_dir": snap}}
    )
    assert mounts["docker-socket"] == "/run/docker.sock"
    assert settings.docker_host == "unix:///run/docker.sock"
    assert mounts["lxd"] == snap and settings.lxd_socket == f"{snap}/unix.socket"

    _, settings = pod({"settings": {"docker_host": "tcp://docker:2376", "lxd_socket": "/run/lxd.socket"}})
    assert settings.docker_host == "tcp://docker:2376" and settings.lxd_socket == "/run/lxd.socket"

    mounts, settings = pod({"settings": {"docker": False, "lxd": False}})
    assert settings.docker_host is None and settings.lxd_socket is None
    assert not {"docker-socket", "lxd"} & mounts.keys()


# --- the chart's refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "terminationGracePeriodSeconds=39"],
            "terminationGracePeriodSeconds (39) must be at least settings.stop_timeout + 10 (40)",
        ),
        (
            ["--set", "settings.stop_timeout=44"],
            "terminationGracePeriodSeconds (45) must be at least settings.stop_timeout + 10 (54)",
        ),
        (["--set", "settings.host=edge-1"], 'settings.host "edge-1" is refused'),
        (["--set", "settings.heartbeat=40"], "settings.heartbeat_timeout (60) must be at least twice"),
        (["--set", "settings.restart_delay=61"], "settings.restart_delay_max (60) must not be below"),
        (["--set", "settings.nosuchkey=1"], "additional properties 'nosuchkey' not allowed"),
        (["--set", "settings.defaults.nosuchkey=1"], "additional properties 'nosuchkey' not allowed"),
        (["--set", "settings.rules[0].delay=1"], "missing property 'match'"),
        (["--set", "settings.log_level=loud"], "/settings/log_level"),
        (["--set", "settings.api_port=0"], "/settings/api_port"),
        (["--set", "settings.api_host=127.0.0.1"], 'settings.api_host "127.0.0.1" is loopback'),
        (["--set", "ssh.privateKey=KEY"], "ssh.privateKey is set but ssh.knownHosts is not"),
    ],
)
def test_bad_values_fail_rendering_with_a_clear_message(helm: Helm, args: list[str], message: str) -> None:
    """Values the program or the pod could not work with make helm template fail, naming them."""
    result = helm("template", "tandem", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("stop_timeout", [0.5, 30, 35, 44, 50.5, 300])
def test_grace_covers_stop_timeout_and_the_supervisors_kill_grace(helm: Helm, stop_timeout: float) -> None:
    """The supervisor waits stop_timeout for the workers' flush, then its kill grace (read from
    orchestrator.lifecycle) before SIGKILL: the chart refuses a terminationGracePeriodSeconds
    below their sum plus GRACE_MARGIN, and accepts one at or above it."""
    needed = stop_timeout + Timing().kill_grace + GRACE_MARGIN
    for grace in (45, math.ceil(needed), math.ceil(needed) - 1):
        args = [
            "--set-json",
            f"settings.stop_timeout={stop_timeout}",
            "--set",
            f"terminationGracePeriodSeconds={grace}",
        ]
        result = helm("template", "tandem", str(CHART), *args, check=False)
        if grace >= needed:
            assert result.returncode == 0, result.stderr
            assert (
                by_kind(render(helm, *args))["DaemonSet"]["spec"]["template"]["spec"][
                    "terminationGracePeriodSeconds"
                ]
                == grace
            )
        else:
            assert result.returncode != 0, f"grace {grace} accepted for stop_timeout {stop_timeout}"
            assert (
                f"must be at least settings.stop_timeout + {Timing().kill_grace + GRACE_MARGIN:g}"
                in result.stderr
            )
    values = (CHART / "values.yaml").read_text()
    assert "stop_timeout + 10" in values


# Values every field of which the schema accepts but the Settings model does not (cross-field
# rules, regexes, paths, a blank token): helm must refuse them, or else the pod would exit 2.
# The chart checks the cheap cross-field rules; for the rest the test shows the loader's refusal.
MODEL_INVALID: list[dict[str, Any]] = [
    {"heartbeat": 40},  # heartbeat_timeout 60 < 2 * 40
    {"heartbeat": 10, "heartbeat_timeout": 19.5},
    {"restart_delay": 90},  # above restart_delay_max 60
    {"restart_delay_max": 0.5},
    {"api_token": "   "},
    {"defaults": {"exclude": ["(unclosed"]}},
    {"rules": [{"match": "db-*", "paths": ["/data/../etc"]}]},
]
# Values at the edges of those rules, which must render and load as given.
MODEL_VALID: list[dict[str, Any]] = [
    {"heartbeat": 30},  # heartbeat_timeout exactly twice heartbeat
    {"heartbeat": 0.5, "heartbeat_timeout": 1, "stop_timeout": 0.5},
    {"restart_delay": 60},  # restart_delay_max equal
    {"stop_timeout": 35},  # the default grace, 45, exactly enough
    {"api_host": "::", "api_port": 1, "log_level": "error", "inotify_warn": 1},
    {"defaults": {"exclude": [r"^/tmp/"], "paths": ["/data"]}, "rules": [{"match": "x", "runtime": "lxc"}]},
]


@pytest.mark.parametrize("settings", MODEL_VALID + MODEL_INVALID, ids=str)
def test_rendered_config_loads_unless_helm_refuses(
    helm: Helm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any]
) -> None:
    """Whatever helm renders, `tandem serve` loads: valid settings render and load as given;
    settings the model refuses either make helm fail or fail orchestrator.settings.load with
    a ConfigError (never a silently different configuration)."""
    result = helm(
        "template", "tandem", str(CHART), "-f", values_file(tmp_path, {"settings": settings}), check=False
    )
    if settings in MODEL_VALID:
        assert result.returncode == 0, result.stderr
        loaded = load_in_pod(
            by_kind([d for d in yaml.safe_load_all(result.stdout) if d]), tmp_path, monkeypatch
        )
        dumped = loaded.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key, value in settings.items():
            if key == "defaults":  # as the model dumps it (aliases, None left out)
                value = ContainerPolicy.model_validate(value).model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
            elif key == "rules":
                value = [
                    Rule.model_validate(r).model_dump(mode="json", by_alias=True, exclude_none=True)
                    for r in value
                ]
            assert dumped[key] == value, key
    elif result.returncode == 0:
        with pytest.raises(ConfigError):
            load_in_pod(by_kind([d for d in yaml.safe_load_all(result.stdout) if d]), tmp_path, monkeypatch)
    else:
        assert "Error: " in result.stderr


# --- one source of truth ---------------------------------------------------------------------


def test_values_settings_are_exactly_the_settings_model() -> None:
    """values.yaml's settings keys are the Settings fields, same spelling, none missing or extra."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["settings"]) == set(Settings.model_fields)


def test_schema_settings_are_exactly_the_settings_model() -> None:
    """values.schema.json knows exactly the Settings fields (and refuses others), the policy keys
    of defaults and the rule keys of rules (field names and their TOML aliases)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    settings = schema["properties"]["settings"]
    assert settings["additionalProperties"] is False
    assert set(settings["properties"]) == set(Settings.model_fields)

    def keys(model: type[ContainerPolicy]) -> set[str]:
        return {name for field, info in model.model_fields.items() for name in (field, info.alias) if name}

    defaults = settings["properties"]["defaults"]
    assert defaults["additionalProperties"] is False
    assert set(defaults["properties"]) == keys(ContainerPolicy)
    rule = settings["properties"]["rules"]["items"]
    assert rule["additionalProperties"] is False
    assert set(rule["properties"]) == keys(Rule)


def test_chart_version_follows_the_project_version() -> None:
    """Chart.yaml's appVersion and version are workers.__version__, the project's one version."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "tandem"
    assert chart["appVersion"] == workers.__version__
    assert chart["version"] == workers.__version__
