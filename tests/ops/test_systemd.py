"""The systemd units: rendered with real paths, checked by `systemd-analyze verify` (which exits
0 even on an unknown Type=, so ANY output fails the test), and checked for the directives the
daemon contract needs (docs/ARCHITECTURE.md "The daemon contract").
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smsgw.services.admin import systemd_render
from smsgw.services.admin.systemd_render import Layout, render_all, unit_files

REPO = Path(__file__).resolve().parents[2]
DAEMONS = ("receiver", "processor", "sender", "reporter")
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed")


def _layout(tmp_path: Path) -> Layout:
    etc = tmp_path / "etc"
    (etc / "credentials").mkdir(parents=True)
    (etc / "smsgw.toml").write_text("")
    for name in ("pgpass", "server-secret"):
        (etc / "credentials" / name).write_text("x\n")
    venv = Path(sys.prefix)
    assert (venv / "bin" / "smsgw").exists(), "install smsgw into the venv running the tests"
    return Layout(venv=str(venv), config=str(etc / "smsgw.toml"),
                  credentials=str(etc / "credentials"), docs=str(REPO / "README.md"),
                  user="smsgw")


def _verify(out: Path, names: list[str]) -> str:
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=out,
                         capture_output=True, text=True, timeout=60)
    return (res.stdout + res.stderr).strip()


def _parse(path: Path) -> configparser.ConfigParser:
    # strict=False: LoadCredential=, Environment= and SystemCallFilter= repeat legitimately.
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(path)
    return cp


def test_every_unit_is_shipped() -> None:
    """1. The package ships a plain and a template unit per daemon, the simulator and a target."""
    names = {p.name for p in unit_files()}
    for d in DAEMONS:
        assert {f"smsgw-{d}.service", f"smsgw-{d}@.service"} <= names
    assert {"smsgw-smsc-sim.service", "smsgw.target"} <= names


@needs_systemd
def test_rendered_units_verify_without_any_output(tmp_path: Path) -> None:
    """1. Render every unit with this checkout's venv and temp config/credential paths.
    2. Run `systemd-analyze verify` on all of them plus template instances (@2).
    3. Any line of output fails: verify exits 0 on warnings such as an unknown Type=.
    """
    out = tmp_path / "units"
    written = render_all(out, _layout(tmp_path))
    text = "\n".join(p.read_text() for p in written)
    assert "/opt/smsgw/venv" not in text and "/etc/smsgw/" not in text
    names = [p.name for p in written] + [f"smsgw-{d}@2.service" for d in DAEMONS]
    assert _verify(out, names) == ""


@needs_systemd
def test_verify_check_catches_a_bad_type(tmp_path: Path) -> None:
    """1. Render, then change Type=notify to notify-reload (unknown to systemd 252).
    2. verify still exits 0 but prints a warning, which the check above would catch.
    """
    out = tmp_path / "units"
    render_all(out, _layout(tmp_path))
    unit = out / "smsgw-sender.service"
    unit.write_text(unit.read_text().replace("Type=notify\n", "Type=notify-reload\n"))
    assert "notify-reload" in _verify(out, [unit.name])


@pytest.mark.parametrize("path", unit_files(), ids=lambda p: p.name)
def test_unit_directives(path: Path) -> None:
    """1. Parse each shipped service unit.
    2. Check the daemon contract: notify type, SIGHUP reload, watchdog, credentials (daemons),
       smsgw run directly (no shell), restart policy with 78 excluded, hardening, template
       instance passing.
    """
    if path.suffix == ".target":
        _check_target(path)
        return
    unit = _parse(path)
    # every service belongs to the target: started by it when enabled, stopped with it
    assert unit["Unit"]["PartOf"] == "smsgw.target"
    assert unit["Install"]["WantedBy"] == "smsgw.target"
    svc = unit["Service"]
    daemon = path.name.removeprefix("smsgw-").split("@")[0].removesuffix(".service")
    if daemon in DAEMONS:
        assert svc["Type"] == "notify"
        assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
        assert int(svc["WatchdogSec"]) > 0
        assert "LoadCredential" in svc
    else:  # the simulator sends no READY=1 and has no reload: Type=exec, no watchdog
        assert svc["Type"] == "exec" and "WatchdogSec" not in svc and "ExecReload" not in svc
    exec_start = svc["ExecStart"].split()
    assert exec_start[0] == f"{systemd_render.DEFAULT_VENV}/bin/smsgw"
    assert exec_start[1] == daemon
    if "@" in path.name:
        assert exec_start[-2:] == ["--instance", "%i"]
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"] == "78"
    for key, value in {"User": "smsgw", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                       "PrivateTmp": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "",
                       "SystemCallFilter": "~@privileged @resources"}.items():
        assert svc[key] == value, key
    assert "AF_INET" in svc["RestrictAddressFamilies"]


def _check_target(path: Path) -> None:
    """smsgw.target wants exactly one plain instance of each daemon (never the simulator, never
    a template), starts after the network is up, and is itself wanted by multi-user.target."""
    target = _parse(path)
    assert set(target["Unit"]) >= {"Description", "Wants", "After"}
    assert sorted(target["Unit"]["Wants"].split()) == sorted(
        f"smsgw-{d}.service" for d in DAEMONS)
    assert "network-online.target" in target["Unit"]["After"].split()
    assert target["Install"]["WantedBy"] == "multi-user.target"
    assert not target.has_section("Service")
    shipped = {p.name for p in unit_files()}
    assert set(target["Unit"]["Wants"].split()) <= shipped


def test_render_replaces_paths_and_user(tmp_path: Path) -> None:
    """1. Render with a custom layout. 2. Every default path and the user are replaced."""
    layout = Layout(venv="/srv/v", config="/srv/c.toml", credentials="/srv/creds",
                    docs="/srv/README.md", user="gw")
    text = systemd_render.render(
        (REPO / "services/sender/smsgw-sender@.service").read_text(), layout)
    assert "ExecStart=/srv/v/bin/smsgw sender --config /srv/c.toml --instance %i" in text
    assert "LoadCredential=pgpass:/srv/creds/pgpass" in text
    assert re.search(r"^User=gw$", text, re.M) and re.search(r"^Group=gw$", text, re.M)


@needs_systemd
def test_security_scores_are_documented(tmp_path: Path) -> None:
    """1. Run `systemd-analyze security --offline=true` on each rendered service.
    2. Each exposure is at most 2.0 ("OK") and the README shows the measured score.
    """
    out = tmp_path / "units"
    render_all(out, _layout(tmp_path))
    doc = (REPO / "README.md").read_text()
    for unit in sorted(out.glob("*.service")):
        if "@" in unit.name:
            continue
        res = subprocess.run(["systemd-analyze", "security", "--offline=true", unit.name],
                             cwd=out, capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", res.stdout + res.stderr)
        assert m, res.stdout + res.stderr
        score = float(m.group(1))
        assert score <= 2.0, (unit.name, score)
        assert f"| `{unit.name}` | {score} |" in doc, (unit.name, score)
