"""Static checks of the deploy/ artifacts, plus what can run without them.

No Docker engine, kubectl or Grafana exists on the build machine, so the
Dockerfile, the compose file, the Kubernetes manifests, the systemd unit
and the dashboard are checked by reading them: they parse, and what one
file assumes about another holds (ports, paths, timeouts, metric names).
The settings each deployment ends up with are computed the way pgshelf
computes them (defaults, then the TOML file, then the environment: the
image's ENV overlaid by the compose or pod environment). Whatever can run
here does: `pgshelf check` on every shipped config and rules file, the
image's health-check script against a real pgshelf, `ldd` of the binary
against the image's runtime packages, `systemd-analyze verify`, and the
JSON log format the Kubernetes config selects.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pgshelf_harness import find_pgshelf_bin, free_port, pgshelf_sanitizers, port_accepts, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"

# The metrics the dashboard may use (histograms by their base name).
ALLOWED_METRICS = {
    "pgshelf_client_connections",
    "pgshelf_client_connections_accepted_total",
    "pgshelf_server_connections",
    "pgshelf_cache_requests_total",
    "pgshelf_cache_bypass_total",
    "pgshelf_rule_requests_total",
    "pgshelf_rule_stores_total",
    "pgshelf_rule_invalidations_total",
    "pgshelf_cache_invalidations_total",
    "pgshelf_cache_served_bytes_total",
    "pgshelf_cache_hit_duration_seconds",
    "pgshelf_cache_miss_duration_seconds",
    "pgshelf_redis_command_duration_seconds",
    "pgshelf_redis_errors_total",
    "pgshelf_redis_circuit_open",
    "pgshelf_cache_hits_suspended",
    "pgshelf_protocol_errors_total",
    "pgshelf_server_connect_errors_total",
    "pgshelf_config_reloads_total",
    "pgshelf_ready",
    "pgshelf_draining",
}
HISTOGRAMS = {"pgshelf_cache_hit_duration_seconds", "pgshelf_cache_miss_duration_seconds",
              "pgshelf_redis_command_duration_seconds"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


# ---------------------------------------------------------------- helpers

def parse_duration(text: str | int) -> float:
    """Seconds in pgshelf's duration syntax (ms, s, m, h, d; bare = s)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(text))
    assert m, f"not a duration: {text!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def effective_settings(toml_text: str, env: dict[str, str]) -> dict[str, str]:
    """The few settings the artifacts depend on, as pgshelf resolves them:
    defaults, the file, then the environment (for each setting the short
    name first, so PGSHELF_<SECTION>_<KEY> wins over it, as in config.cpp)."""
    conf = tomllib.loads(toml_text)
    table = {
        "listen": ("listen", "address", "127.0.0.1:6432", ["PGSHELF_LISTEN", "PGSHELF_LISTEN_ADDRESS"]),
        "admin": ("admin", "listen", "127.0.0.1:9930", ["PGSHELF_ADMIN_LISTEN"]),
        "shutdown_timeout": ("proxy", "shutdown_timeout", "30s", ["PGSHELF_PROXY_SHUTDOWN_TIMEOUT"]),
        "rules": ("rules", "file", "", ["PGSHELF_RULES", "PGSHELF_RULES_FILE"]),
        "upstream": ("upstream", "url", "postgres://127.0.0.1:5432", ["PGSHELF_UPSTREAM", "PGSHELF_UPSTREAM_URL"]),
        "redis": ("redis", "url", "", ["REDIS_URL", "PGSHELF_REDIS_URL"]),
        "log_format": ("log", "format", "text", ["PGSHELF_LOG_FORMAT"]),
    }
    out = {}
    for name, (section, key, default, env_names) in table.items():
        value = str(conf.get(section, {}).get(key, default))
        for env_name in env_names:
            value = env.get(env_name, value)
        out[name] = value
    return out


def test_effective_settings_follow_pgshelf_precedence():
    toml_text = '[listen]\naddress = "127.0.0.1:7000"\n[proxy]\nshutdown_timeout = "12s"\n'
    assert effective_settings(toml_text, {})["listen"] == "127.0.0.1:7000"
    assert effective_settings("", {})["shutdown_timeout"] == "30s"
    env = {"PGSHELF_LISTEN": "0.0.0.0:7001", "PGSHELF_LISTEN_ADDRESS": "0.0.0.0:7002"}
    assert effective_settings(toml_text, env)["listen"] == "0.0.0.0:7002"
    assert effective_settings(toml_text, {"PGSHELF_PROXY_SHUTDOWN_TIMEOUT": "5s"})["shutdown_timeout"] == "5s"


class Dockerfile:
    """Instructions per stage, continuation lines joined, comments dropped."""

    def __init__(self, path: Path) -> None:
        self.stages: list[list[tuple[str, str]]] = []
        logical = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not logical and (not line or line.startswith("#")):
                continue
            if line.startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            instruction, _, args = logical.partition(" ")
            instruction = instruction.upper()
            if instruction == "FROM":
                self.stages.append([])
            assert self.stages, f"{instruction} before the first FROM"
            self.stages[-1].append((instruction, args.strip()))
            logical = ""

    def all(self, stage: list[tuple[str, str]], instruction: str) -> list[str]:
        return [args for ins, args in stage if ins == instruction]

    def env(self, stage: list[tuple[str, str]]) -> dict[str, str]:
        env = {}
        for args in self.all(stage, "ENV"):
            for token in shlex.split(args):
                name, eq, value = token.partition("=")
                assert eq, f"ENV without '=' (legacy form) in {args!r}"
                env[name] = value
        return env


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DEPLOY / "Dockerfile")


@pytest.fixture(scope="module")
def image_env(dockerfile: Dockerfile) -> dict[str, str]:
    return dockerfile.env(dockerfile.stages[-1])


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def kube() -> dict[str, dict]:
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc.get('metadata', {}).get('name', path.name)}"] = doc
    return docs


def run_check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(find_pgshelf_bin()), "check", str(config)], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def with_rules_in(config_text: str, rules_text: str, directory: Path) -> Path:
    """Writes the config and its rules file into `directory`, pointing the
    config's rules.file at the copy (the deployed path does not exist here)."""
    rules = directory / "rules.toml"
    rules.write_text(rules_text)
    conf = tomllib.loads(config_text)
    deployed = conf.get("rules", {}).get("file")
    assert deployed, "the config names no rules.file"
    pattern = re.compile(r'^(\s*file\s*=\s*)"' + re.escape(deployed) + '"', re.M)
    rewritten, n = pattern.subn(lambda m: f'{m.group(1)}"{rules}"', config_text)
    assert n == 1, f"rules.file = {deployed!r} not found exactly once"
    config = directory / "pgshelf.toml"
    config.write_text(rewritten)
    return config


# ---------------------------------------------------------------- all files

def test_every_yaml_file_parses():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 4, files
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} has no document"
        assert all(isinstance(d, dict) for d in docs), path


def test_readme_documents_each_artifact():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## Deploying\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert m, "README.md has no '## Deploying' section"
    section = m.group(1)
    for name in ["deploy/Dockerfile", "deploy/docker-compose.yml", "deploy/kubernetes/", "deploy/pgshelf.service",
                 "deploy/grafana-dashboard.json", "volatile-lru", "test_deploy.py"]:
        assert name in section, f"the Deploying section does not mention {name}"


# ---------------------------------------------------------------- Dockerfile

def test_dockerfile_builds_with_the_ci_scripts(dockerfile: Dockerfile):
    assert len(dockerfile.stages) == 2, "expected a build stage and a runtime stage"
    build, runtime = dockerfile.stages
    assert re.fullmatch(r"debian:bookworm\S*\s+AS\s+build", build[0][1], re.I), build[0]
    assert re.fullmatch(r"debian:bookworm\S*", runtime[0][1]), runtime[0]
    runs = dockerfile.all(build, "RUN")
    assert any(re.search(r"(^|\s)scripts/install-deps(\s|$)", r) for r in runs), "the build stage must run scripts/install-deps"
    assert not any("install-deps" in r for r in dockerfile.all(runtime, "RUN")), "the runtime stage installs build deps"

    # scripts/run's configure and build commands, flag for flag.
    run_script = (ROOT / "scripts" / "run").read_text()
    configure = next(line for line in run_script.splitlines() if line.strip().startswith("cmake -S"))
    build_cmd = next(line for line in run_script.splitlines() if line.strip().startswith("cmake --build"))
    flags = lambda cmd: {t for t in shlex.split(cmd) if not t.startswith(">")}  # noqa: E731
    build_runs = " && ".join(runs)
    docker_configure = re.search(r"cmake -S [^&]*", build_runs)
    docker_build = re.search(r"cmake --build [^&]*", build_runs)
    assert docker_configure and docker_build, "no cmake configure/build in the build stage"
    assert flags(docker_configure.group(0)) == flags(configure), (docker_configure.group(0), configure)
    assert flags(docker_build.group(0)) == flags(build_cmd), (docker_build.group(0), build_cmd)
    build_dir = shlex.split(configure)[shlex.split(configure).index("-B") + 1]
    copies = " ".join(dockerfile.all(runtime, "COPY"))
    assert f"--from=build /src/{build_dir}/app/pgshelf" in copies


def test_dockerfile_runtime_stage(dockerfile: Dockerfile, image_env: dict[str, str]):
    runtime = dockerfile.stages[-1]
    users = dockerfile.all(runtime, "USER")
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, users
    assert dockerfile.all(runtime, "STOPSIGNAL") == ["SIGTERM"]
    exposed = {int(p.split("/")[0]) for e in dockerfile.all(runtime, "EXPOSE") for p in e.split()}
    listen_host, listen_port = endpoint(image_env["PGSHELF_LISTEN"])
    admin_host, admin_port = endpoint(image_env["PGSHELF_ADMIN_LISTEN"])
    assert {6432, 9187} <= exposed and {listen_port, admin_port} <= exposed, exposed
    # Loopback inside a container is unreachable from anywhere else.
    assert listen_host not in LOOPBACK and admin_host not in LOOPBACK

    healthchecks = dockerfile.all(runtime, "HEALTHCHECK")
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0], healthchecks
    cmd = json.loads(healthchecks[0].split("CMD", 1)[1])
    copied = {args.split()[-1]: args.split()[-2] for args in dockerfile.all(runtime, "COPY")}
    assert cmd[0] in copied, f"{cmd[0]} is not copied into the image"
    assert (ROOT / copied[cmd[0]]).is_file() and os.access(ROOT / copied[cmd[0]], os.X_OK)

    entrypoint = json.loads(dockerfile.all(runtime, "ENTRYPOINT")[0])
    assert entrypoint[0].endswith("/pgshelf") and entrypoint[1] == "--config", entrypoint
    config_dir = copied.get("/etc/pgshelf/")
    assert config_dir and entrypoint[2] == "/etc/pgshelf/pgshelf.toml"
    for source in dockerfile.all(runtime, "COPY"):
        if source.startswith("--from"):
            continue
        for path in source.split()[:-1]:
            if not path.startswith("--"):
                assert (ROOT / path).exists(), f"COPY source {path} does not exist"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "build-*" in ignore and ".git" in ignore


def test_dockerfile_runtime_packages_cover_what_the_binary_links(dockerfile: Dockerfile):
    if not shutil.which("ldd") or not shutil.which("dpkg"):
        pytest.skip("needs ldd and dpkg (Debian)")
    if pgshelf_sanitizers():
        pytest.skip("a sanitizer build links its runtimes; the image ships a plain build")
    runs = " ".join(dockerfile.all(dockerfile.stages[-1], "RUN"))
    m = re.search(r"apt-get install ((?:\s*-\S+)*)((?:\s+[a-z0-9][a-z0-9.+-]*)+)", runs)
    assert m, "no apt-get install in the runtime stage"
    installed = set(m.group(2).split())
    assert not {p for p in installed if p.endswith("-dev")}, installed
    in_base_image = {"libc6", "libstdc++6", "libgcc-s1"}
    ldd = subprocess.run(["ldd", str(find_pgshelf_bin())], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"=>\s+(/\S+)", ldd)
    assert libs, ldd
    needed = set()
    for lib in libs:
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(lib)], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        assert owner.returncode == 0, f"no Debian package owns {lib}"
        needed.add(owner.stdout.split(":")[0])
    missing = needed - installed - in_base_image
    assert not missing, f"the runtime stage lacks {sorted(missing)}"


def test_healthcheck_script_against_a_real_pgshelf(tmp_path: Path):
    script = DEPLOY / "healthcheck.sh"
    admin = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGSHELF_LISTEN": f"127.0.0.1:{free_port()}",
           "PGSHELF_ADMIN_LISTEN": f"0.0.0.0:{admin}", "PGSHELF_PROXY_SHUTDOWN_TIMEOUT": "1s"}
    check_env = {"PATH": env["PATH"], "PGSHELF_ADMIN_LISTEN": env["PGSHELF_ADMIN_LISTEN"]}
    run = lambda *args, e=check_env: subprocess.run([str(script), *args], env=e, capture_output=True,  # noqa: E731
                                                    timeout=60).returncode
    assert run() != 0, "healthy while nothing listens"
    log = open(tmp_path / "pgshelf.log", "w")
    proc = subprocess.Popen([str(find_pgshelf_bin())], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_accepts(admin), 60)
        assert run() == 0, (tmp_path / "pgshelf.log").read_text()
        assert run("/no-such-page") != 0, "a 404 counted as healthy"
        assert run(e={"PATH": env["PATH"], "PGSHELF_ADMIN_LISTEN": "off"}) != 0, "healthy with the admin port off"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()
    assert run() != 0, "healthy after pgshelf exited"


# ---------------------------------------------------------------- compose

def test_compose_services_and_dependencies(compose: dict):
    services = compose["services"]
    assert {"app", "pgshelf", "postgres", "redis"} <= set(services), set(services)
    assert set(services["app"]["depends_on"]) == {"pgshelf"}, "the app must reach the database only through pgshelf"
    assert services["app"]["depends_on"]["pgshelf"]["condition"] == "service_healthy"
    assert set(services["pgshelf"]["depends_on"]) >= {"postgres", "redis"}
    build = services["pgshelf"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: volume source {source} does not exist"


def test_compose_redis_is_a_cache_that_keeps_generations(compose: dict):
    command = compose["services"]["redis"]["command"]
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    option = lambda name: args[args.index(name) + 1] if name in args else None  # noqa: E731
    assert option("--appendonly") == "no", args
    assert option("--maxmemory"), "a maxmemory-policy does nothing without maxmemory"
    # Only volatile-* policies leave keys without a TTL (pgshelf's generations) alone.
    assert option("--maxmemory-policy") in {"volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random"}, args


def test_compose_urls_match_the_sidecar(compose: dict, image_env: dict[str, str]):
    services = compose["services"]
    env = {**image_env, **services["pgshelf"]["environment"]}
    settings = effective_settings((DEPLOY / "pgshelf.toml").read_text(), env)
    listen_host, listen_port = endpoint(settings["listen"])
    assert listen_host not in LOOPBACK, "the app runs in another container"
    url = urlsplit(services["app"]["environment"]["DATABASE_URL"])
    assert (url.hostname, url.port) == ("pgshelf", listen_port), url
    pg = services["postgres"]["environment"]
    assert (url.username, url.password, url.path.lstrip("/")) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    upstream = urlsplit(settings["upstream"])
    assert (upstream.hostname, upstream.port or 5432) == ("postgres", 5432), upstream
    assert urlsplit(settings["redis"]).hostname == "redis"
    mounted = {v.split(":")[1] for v in services["pgshelf"].get("volumes", [])}
    assert settings["rules"] in mounted, f"rules file {settings['rules']} is not mounted"
    published = {str(p).split(":")[-1] for p in services["pgshelf"].get("ports", [])}
    assert str(endpoint(settings["admin"])[1]) in published
    grace = parse_duration(str(services["pgshelf"]["stop_grace_period"]))
    assert grace > parse_duration(settings["shutdown_timeout"]), "docker stop would kill pgshelf mid-drain"


# ---------------------------------------------------------------- Kubernetes

def pod_parts(kube: dict[str, dict]):
    deployments = [d for key, d in kube.items() if key.startswith("Deployment/")]
    assert len(deployments) == 1, list(kube)
    pod = deployments[0]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    return pod, containers


def container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_kubernetes_pod_has_app_and_pgshelf(kube: dict[str, dict]):
    pod, containers = pod_parts(kube)
    assert set(containers) == {"app", "pgshelf"}, set(containers)
    for container in containers.values():
        assert container.get("resources", {}).get("requests", {}).keys() >= {"cpu", "memory"}, container["name"]
    security = containers["pgshelf"]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    image_names = {i["name"] for i in kustomization.get("images", [])}
    assert containers["pgshelf"]["image"].split(":")[0] in image_names


def test_kubernetes_probes_urls_and_grace_period(kube: dict[str, dict], dockerfile: Dockerfile,
                                                 image_env: dict[str, str]):
    pod, containers = pod_parts(kube)
    shelf = containers["pgshelf"]
    config_map = kube["ConfigMap/pgshelf-config"]
    settings = effective_settings(config_map["data"]["pgshelf.toml"], {**image_env, **container_env(shelf)})

    admin_host, admin_port = endpoint(settings["admin"])
    assert admin_host not in LOOPBACK, "the kubelet probes the pod IP, not the container's loopback"
    ports = {p.get("name"): p["containerPort"] for p in shelf.get("ports", [])}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = shelf[probe]["httpGet"]
        assert get["path"] == path, (probe, get)
        port = ports.get(get["port"], get["port"])
        assert port == admin_port, f"{probe} probes port {port}, pgshelf's admin port is {admin_port}"

    listen_host, listen_port = endpoint(settings["listen"])
    url = urlsplit(container_env(containers["app"])["DATABASE_URL"])
    assert url.hostname in LOOPBACK and url.port == listen_port, url
    assert listen_host in LOOPBACK | {"0.0.0.0"}, settings["listen"]

    pre_stop = shelf.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[-1]) if pre_stop and pre_stop[0].endswith("sleep") else 0.0
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pause + parse_duration(settings["shutdown_timeout"]), (grace, pause, settings["shutdown_timeout"])


def test_kubernetes_config_map_is_mounted_where_pgshelf_reads(kube: dict[str, dict], dockerfile: Dockerfile,
                                                              image_env: dict[str, str]):
    pod, containers = pod_parts(kube)
    shelf = containers["pgshelf"]
    config_map = kube["ConfigMap/pgshelf-config"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in shelf["volumeMounts"] if volumes[m["name"]].get("configMap", {}).get("name") == "pgshelf-config"]
    assert len(mounts) == 1, shelf["volumeMounts"]
    mount = Path(mounts[0]["mountPath"])
    entrypoint = shelf.get("command") or json.loads(dockerfile.all(dockerfile.stages[-1], "ENTRYPOINT")[0])
    args = entrypoint + shelf.get("args", [])
    config_path = Path(args[args.index("--config") + 1])
    assert config_path.parent == mount and config_path.name in config_map["data"], config_path
    settings = effective_settings(config_map["data"]["pgshelf.toml"], {**image_env, **container_env(shelf)})
    rules = Path(settings["rules"])
    assert rules.parent == mount and rules.name in config_map["data"], rules
    # The example's rules, kept in step with the tested ones.
    assert config_map["data"]["rules.toml"] == (ROOT / "examples/telegram-bot/rules.toml").read_text()


def test_pgshelf_accepts_the_config_map(kube: dict[str, dict], tmp_path: Path):
    data = kube["ConfigMap/pgshelf-config"]["data"]
    config = with_rules_in(data["pgshelf.toml"], data["rules.toml"], tmp_path)
    result = run_check(config)
    assert result.returncode == 0, result.stderr
    assert re.search(r"ok, [1-9]\d* cache rules", result.stdout), result.stdout


def test_config_map_log_format_gives_json_lines(kube: dict[str, dict], tmp_path: Path):
    data = kube["ConfigMap/pgshelf-config"]["data"]
    assert effective_settings(data["pgshelf.toml"], {})["log_format"] == "json"
    config = with_rules_in(data["pgshelf.toml"], data["rules.toml"], tmp_path)
    admin = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGSHELF_LISTEN": f"127.0.0.1:{free_port()}",
           "PGSHELF_ADMIN_LISTEN": f"127.0.0.1:{admin}", "PGSHELF_PROXY_SHUTDOWN_TIMEOUT": "1s",
           "PGSHELF_UPSTREAM": "postgres://127.0.0.1:1?sslmode=disable"}
    proc = subprocess.Popen([str(find_pgshelf_bin()), "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_accepts(admin), 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [line for line in out.splitlines() if line]
    assert len(lines) >= 2, out
    for line in lines:
        record = json.loads(line)
        assert set(record) >= {"ts", "level", "msg", "thread"}, record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["ts"]), record["ts"]
    assert any("listening on" in json.loads(line)["msg"] for line in lines), out


# ---------------------------------------------------------------- systemd

def unit_entries(text: str) -> list[tuple[str, str, str]]:
    section, entries = "", []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def test_systemd_unit():
    entries = unit_entries((DEPLOY / "pgshelf.service").read_text())
    service = {}
    for section, key, value in entries:
        if section == "Service":
            service.setdefault(key, []).append(value)
    assert service["Type"] == ["simple"]
    assert any(re.fullmatch(r"/bin/kill -HUP \$MAINPID", v) for v in service["ExecReload"]), service["ExecReload"]
    assert service["KillSignal"] == ["SIGTERM"]
    exec_start = shlex.split(service["ExecStart"][0])
    config = exec_start[exec_start.index("--config") + 1]
    assert config == "/etc/pgshelf/pgshelf.toml"
    settings = effective_settings((DEPLOY / "pgshelf.toml").read_text(), {})
    assert parse_duration(service["TimeoutStopSec"][0]) > parse_duration(settings["shutdown_timeout"])
    assert service.get("NoNewPrivileges") == ["yes"] and service.get("ProtectSystem") == ["strict"]
    user = service.get("User", ["root"])[0]
    assert service.get("DynamicUser") == ["yes"] or user not in {"root", "0"}
    assert ("Install", "WantedBy", "multi-user.target") in entries


def test_systemd_analyze_verify_is_clean(tmp_path: Path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze")
    text = (DEPLOY / "pgshelf.service").read_text().replace("/usr/local/bin/pgshelf", str(find_pgshelf_bin()))
    unit = tmp_path / "pgshelf.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if str(unit) in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# ---------------------------------------------------------------- pgshelf check

def test_pgshelf_accepts_the_host_config_and_rules(tmp_path: Path):
    config = with_rules_in((DEPLOY / "pgshelf.toml").read_text(), (DEPLOY / "rules.toml").read_text(), tmp_path)
    result = run_check(config)
    assert result.returncode == 0, result.stderr
    # The control: the same check refuses a broken copy.
    config.write_text(config.read_text() + '\n[proxy2]\nworkers = "x"\n')
    broken = run_check(config)
    assert broken.returncode == 2 and "proxy2" in broken.stderr, broken.stderr


# ---------------------------------------------------------------- Grafana

def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                exprs.append(target["expr"])
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_grafana_dashboard():
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41, dashboard["schemaVersion"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert any(i["name"] == "DS_PROMETHEUS" for i in dashboard.get("__inputs", []))
    ids = []

    def walk(panels):
        for panel in panels:
            ids.append(panel["id"])
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
                assert panel["targets"], panel["title"]
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    assert len(ids) == len(set(ids)), "panel ids repeat"

    used = set()
    for expr in dashboard_exprs(dashboard):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        for name in re.findall(r"\bpgshelf_[a-z0-9_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name) if re.sub(r"_(bucket|sum|count)$", "", name) in HISTOGRAMS else name
            assert base in ALLOWED_METRICS, f"unknown metric {name} in {expr}"
            if base in HISTOGRAMS:
                assert name.endswith("_bucket") and "histogram_quantile" in expr, expr
            used.add(base)
    assert used == ALLOWED_METRICS, f"metrics without a panel: {sorted(ALLOWED_METRICS - used)}"
    hit_ratio = [e for e in dashboard_exprs(dashboard) if 'outcome="hit"' in e and 'outcome=~"hit|miss"' in e]
    assert hit_ratio, "no hit / (hit + miss) ratio"
