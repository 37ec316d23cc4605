"""docker-compose.yml, the Dockerfile and the Prometheus/Grafana files they mount.

No Docker engine runs here, so the compose file is validated against a vendored copy of the
Compose Specification's JSON schema (tests/ops/data/README.md says where it comes from), and
every smsgw command it runs is either run by this file (migrate, check-config of its config) or
is exactly the command line `smsgw up` gives its children, which the end-to-end test runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from smsgw.services.admin import up
from smsgw.services.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
COMPOSE_CONFIG = "/etc/smsgw/smsgw.toml"
METRICS_PORTS = {"receiver": 9101, "processor": 9102, "sender": 9103, "reporter": 9104}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _smsgw_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    """service name -> command, for every service running the smsgw image."""
    return {name: svc["command"] for name, svc in compose["services"].items()
            if svc.get("image", "").startswith("smsgw:")}


def _compose_env(compose: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    """The receiver's environment with ${VAR:-default} resolved to the defaults and the
    required ${VAR:?message} to the `given` values (the operator's .env)."""
    env = compose["services"]["receiver"]["environment"]

    def value(m: re.Match[str]) -> str:
        return given[m.group(1)] if m.group(2) == ":?" else m.group(3)

    return {k: re.sub(r"\$\{([A-Z_]+)(:-|:\?)([^}]*)\}", value, str(v)) for k, v in env.items()}


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    """1. Load the vendored Compose Specification schema (draft-07).
    2. docker-compose.yml validates against it, with no error at all.
    """
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_check_catches_a_mistake(compose: dict[str, Any]) -> None:
    """A misspelled key fails the same validation (the check above can fail)."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["receiver"]["comand"] = ["smsgw"]
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_compose_runs_every_part(compose: dict[str, Any]) -> None:
    """Postgres, migrate, the three daemons, the simulator, Prometheus and Grafana are there."""
    assert {"postgres", "migrate", "receiver", "processor", "sender", "smsc-sim", "prometheus",
            "grafana"} <= set(compose["services"])
    images = {svc.get("image") for name, svc in compose["services"].items()
              if name in ("receiver", "processor", "sender", "smsc-sim", "migrate")}
    assert images == {"smsgw:latest"}, "one image for every smsgw command"


def test_daemon_commands_are_the_ones_smsgw_up_runs(compose: dict[str, Any]) -> None:
    """1. For each daemon service, take its command.
    2. It must equal the argv `smsgw up` gives that daemon's child (which the end-to-end test
       starts), with the interpreter prefix replaced by the `smsgw` script.
    """
    commands = _smsgw_services(compose)
    prefix = up.cli_argv()
    for daemon in ("receiver", "processor", "sender", "reporter"):
        expected = up.daemon_argv(daemon, 1, Path(COMPOSE_CONFIG))
        assert expected[:len(prefix)] == prefix
        assert commands[daemon] == ["smsgw", *expected[len(prefix):]], daemon
    opts = up.parse_options(["--smpp-port", "2775"])
    sim = up.sim_argv(opts)[len(prefix):]
    sim[sim.index("--host") + 1] = "0.0.0.0"
    assert commands["smsc-sim"] == ["smsgw", *sim]
    for name, cmd in commands.items():
        assert cmd[0] == "smsgw" and cmd[1] in COMMANDS, name


def test_migrate_and_config_commands_run(compose: dict[str, Any], db_url: str,
                                         tmp_path: Path) -> None:
    """1. Run the compose file's migrate command (config path mapped to the repo copy) against
       a test database: exit 0.
    2. Run `smsgw check-config` on the compose config with the compose environment: exit 0, so
       every daemon would start on it.
    """
    cmd = compose["services"]["migrate"]["command"]
    assert cmd[:2] == ["smsgw", "migrate"]
    local = [str(REPO / "deploy/compose/smsgw.toml") if a == COMPOSE_CONFIG else a for a in cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    url = urlsplit(db_url)  # the compose way: the password in DB_PASSWORD, not in the URL
    env.update(_compose_env(compose, {"DB_PASSWORD": url.password or "",
                                      "SERVER_SECRET": "compose-test-secret"}))
    user = f"{url.username}@" if url.username else ""
    env["SMSGW_DATABASE_URL"] = url._replace(
        netloc=user + url.netloc.rsplit("@", 1)[-1]).geturl()
    script = [sys.executable, "-m", "smsgw.services.cli"]
    res = subprocess.run([*script, *local[1:]], env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*script, "check-config", "--config", local[local.index("--config") + 1]],
                         env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_healthchecks_and_scrape_targets_use_the_design_ports(compose: dict[str, Any]) -> None:
    """Each daemon's healthcheck and Prometheus target use the metrics port of docs/ARCHITECTURE.md
    "Ports"."""
    prom = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    for daemon, port in METRICS_PORTS.items():
        assert f"{daemon}:{port}" in targets
        assert f"127.0.0.1:{port}/readyz" in " ".join(compose["services"][daemon]["healthcheck"]
                                                      ["test"])


def test_prometheus_and_grafana_mounts_match_their_configs(compose: dict[str, Any]) -> None:
    """1. Prometheus mounts deploy/prometheus where its rule_files point.
    2. Grafana mounts the provisioning folder and the dashboards where the provider looks, and
       every dashboard uses the provisioned datasource uid.
    """
    prom = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    rules = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())["rule_files"]
    assert rules == ["/etc/prometheus/alerts.yml"]
    graf = compose["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in graf
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/smsgw.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in graf
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uid = ds["datasources"][0]["uid"]
    for dash in (REPO / "grafana/dashboards").glob("*.json"):
        text = dash.read_text()
        uids = set(re.findall(r'"uid":\s*"([^"]+)"', text)) - {json.loads(text)["uid"]}
        assert uids == {uid}, dash.name


def _install_line(text: str) -> str | None:
    # The first `python3 -m venv .venv && .venv/bin/pip install …` in the README (the quick
    # start), up to the next `&&` or the end of the line.
    m = re.search(r"python3 -m venv \.venv && \.venv/bin/pip install [^&\n]*[^&\s]", text)
    return m.group(0) if m else None


def test_dockerfile_installs_like_the_readme() -> None:
    """1. Find the README's install command (`python3 -m venv .venv && .venv/bin/pip install .`).
    2. The Dockerfile runs exactly that command.
    """
    readme = REPO / "README.md"
    assert readme.exists(), "README.md is missing"
    expected = _install_line(readme.read_text())
    assert expected, "README.md has no `python3 -m venv .venv && .venv/bin/pip install …` line"
    runs = [line.removeprefix("RUN ").strip()
            for line in (REPO / "Dockerfile").read_text().splitlines()
            if line.startswith("RUN ")]
    assert expected in runs
