"""docker-compose.yml has no default secrets and keeps the monitoring ports on loopback.

It used to fall back to `SERVER_SECRET=change-me-demo-only`, `DB_PASSWORD=smsgw` and Grafana
admin/admin, and published Prometheus (9090, no authentication) and Grafana (3000) on every
interface. No Docker engine runs here: the file is parsed as YAML and its `${…}` references are
resolved with Compose's interpolation rules (`${VAR:-default}`, `${VAR-default}`,
`${VAR:?message}`, `${VAR?message}`, `${VAR}`, `$$`), implemented below.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_?KEY|PRIVATE", re.IGNORECASE)
MONITORING = {"prometheus": 9090, "grafana": 3000}
REQUIRED = {"DB_PASSWORD", "SERVER_SECRET", "GRAFANA_ADMIN_PASSWORD"}
_REF = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(Exception):
    """What `docker compose` stops with: a required variable is unset or empty."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve one string as Compose does."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        val = env.get(name)
        if op in (":-", ":?") and not val:
            val = None
        if val is not None:
            return val
        if op in (":?", "?"):
            raise MissingVariable(f"{name}: {arg}")
        return arg if op in (":-", "-") else ""

    return _REF.sub(sub, value)


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _resolved(compose: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return walk(compose)  # type: ignore[no-any-return]


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _host_ip(port: Any) -> str | None:
    """The host address of one `ports` entry after interpolation (None: every interface)."""
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).rsplit(":", 2)
    return parts[0].strip("[]") if len(parts) == 3 else None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    """1. Every environment entry whose name says secret (PASSWORD, SECRET, TOKEN, …), and every
       `${VAR…}` whose variable says so, anywhere in the file.
    2. None is a literal value or has a `:-`/`-` default; each is required (`${VAR:?…}`).
    3. No database URL carries a password.
    """
    problems = []
    for svc_name, svc in compose["services"].items():
        for key, value in _environment(svc).items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value):
                problems.append(f"{svc_name}.environment.{key} = {value!r}")
            if "URL" in key and urlsplit(interpolate(value, {"DB_PASSWORD": "x"})).password:
                problems.append(f"{svc_name}.environment.{key} carries a password")
    for where, text in _strings(compose):
        for m in _REF.finditer(text):
            name = m.group("name") or m.group("bare") or ""
            if SECRET_NAME.search(name) and m.group("op") not in (":?", "?"):
                problems.append(f"{where}: ${{{name}}} is not required ({m.group(0)!r})")
    assert not problems, "\n".join(problems)


def test_compose_refuses_to_start_without_each_secret(compose: dict[str, Any]) -> None:
    """Interpolating with the operator's variables: with every secret set it resolves; with
    any one missing or empty it stops with a message naming it (what `docker compose up`
    prints), and no known demo secret appears in the resolved file."""
    full = {"DB_PASSWORD": "pw-from-env", "SERVER_SECRET": "secret-from-env",
            "GRAFANA_ADMIN_PASSWORD": "grafana-from-env"}
    resolved = _resolved(compose, full)
    text = yaml.safe_dump(resolved)
    for demo in ("change-me-demo-only", "GF_SECURITY_ADMIN_PASSWORD: admin",
                 "POSTGRES_PASSWORD: smsgw"):
        assert demo not in text
    grafana = _environment(resolved["services"]["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-from-env"
    assert _environment(resolved["services"]["postgres"])["POSTGRES_PASSWORD"] == "pw-from-env"
    for name in REQUIRED:
        for missing in ({k: v for k, v in full.items() if k != name}, {**full, name: ""}):
            with pytest.raises(MissingVariable, match=name):
                _resolved(compose, missing)


def test_monitoring_ports_are_loopback_unless_the_operator_says_otherwise(
        compose: dict[str, Any]) -> None:
    """1. Prometheus (9090) and Grafana (3000): every published port resolves to 127.0.0.1
       with no MONITOR_BIND set.
    2. MONITOR_BIND=0.0.0.0 (the operator's choice) publishes them on every interface.
    3. No other service except the receiver's API publishes a port.
    """
    env = {"DB_PASSWORD": "x", "SERVER_SECRET": "x", "GRAFANA_ADMIN_PASSWORD": "x"}
    default = _resolved(compose, env)["services"]
    chosen = _resolved(compose, {**env, "MONITOR_BIND": "0.0.0.0"})["services"]
    for name, port in MONITORING.items():
        ports = default[name].get("ports") or []
        assert ports, name
        for entry in ports:
            assert _host_ip(entry) == "127.0.0.1", (name, entry)
            assert str(entry).endswith(f":{port}"), entry
        assert all(_host_ip(e) == "0.0.0.0" for e in chosen[name]["ports"]), name
    published = {n for n, svc in default.items() if svc.get("ports")}
    assert published == {"receiver", *MONITORING}, published


def test_interpolation_follows_compose_rules() -> None:
    """The interpolation above behaves like Compose's on each form it supports."""
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$x ${SET}", env) == \
        "v d  d $x v"
    with pytest.raises(MissingVariable, match="EMPTY: need it"):
        interpolate("${EMPTY:?need it}", env)
    assert interpolate("${EMPTY?need it}", env) == ""
    with pytest.raises(MissingVariable):
        interpolate("${UNSET?x}", env)
