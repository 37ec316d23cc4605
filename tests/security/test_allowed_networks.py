"""Finding 5: `[webhooks] allowed_networks` (a CIDR list) replaces the all-or-nothing
`allow_private_urls`, and `smsgw up` allows loopback only for its own simulator demo.

A config that still sets `allow_private_urls` (file or `SMSGW_WEBHOOKS__ALLOW_PRIVATE_URLS`)
is a config error (exit 78) naming the replacement; the guard allows a non-public address
only inside a listed network.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from smsgw.services.admin import up
from smsgw.services.processor.settings import ProcessorSettings
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.domain.urlguard import UnsafeUrl, check_url
from smsgw.shared.runtime.config import load_config, load_shared

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}


def test_old_key_in_the_file_or_environment_is_a_config_error(tmp_path: Path) -> None:
    """`allow_private_urls` in the TOML and in the environment: ConfigError naming
    `allowed_networks`, for the shared loader and a daemon's loader alike."""
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text("[webhooks]\nallow_private_urls = true\n")
    for loader in (lambda: load_shared(str(cfg), env={}),
                   lambda: load_config("processor", ProcessorSettings, path=str(cfg), env={},
                                       require_database=False)):
        with pytest.raises(ConfigError) as info:
            loader()
        assert any("allow_private_urls" in e and "allowed_networks" in e
                   for e in info.value.errors), info.value.errors
    with pytest.raises(ConfigError) as info:
        load_shared(None, env={"SMSGW_WEBHOOKS__ALLOW_PRIVATE_URLS": "true"})
    assert any("allowed_networks" in e for e in info.value.errors), info.value.errors


async def test_check_config_and_a_daemon_exit_78_on_the_old_key(tmp_path: Path,
                                                                db_url: str) -> None:
    """`smsgw check-config` with the old key in the file, and `smsgw processor` with it in
    the environment (on a reachable database), both exit 78 and name `allowed_networks`."""
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text("[webhooks]\nallow_private_urls = true\n")
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "check-config", "--config", str(cfg), cwd=ROOT,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 78, (out, err)
    assert b"allowed_networks" in err, err

    env.update({"SMSGW_DATABASE_URL": db_url, "SMSGW_PROCESSOR__METRICS_PORT": "0",
                "SMSGW_SECURITY__SERVER_SECRET_ENV": "SEC_NET_SECRET",
                "SEC_NET_SECRET": "sec-net-secret", "SMSGW_WEBHOOKS__ALLOW_PRIVATE_URLS": "1"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "processor", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(60):
            while line := await proc.stdout.readline():
                output += line
                assert b'"daemon_ready"' not in line, "the processor started with the old key"
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 78, output
    assert b"allowed_networks" in output, output


@pytest.mark.parametrize("bad", ['"10.20.0.0/16"', '["10.20.0.1/16"]', '["0.0.0.0/0"]',
                                 '["::/0"]', '["intranet"]', "[16]"])
def test_bad_networks_are_refused_at_load(tmp_path: Path, bad: str) -> None:
    """A good list loads; not a list, host bits set, /0 (the guard off under another name) and
    not-a-network are config errors naming the key."""
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text('[webhooks]\nallowed_networks = ["10.20.0.0/16", "::1/128"]\n')
    assert len(load_shared(str(cfg), env={}).webhooks.allowed_networks) == 2
    cfg.write_text(f"[webhooks]\nallowed_networks = {bad}\n")
    with pytest.raises(ConfigError, match="allowed_networks"):
        load_shared(str(cfg), env={})


def test_address_inside_an_allowed_network_is_accepted_outside_refused(tmp_path: Path) -> None:
    """`allowed_networks = ["10.20.0.0/16", "fd00:1::/64"]` (file, then environment): inside
    accepted (also spelled in Unicode digits), outside refused, loopback refused (not listed),
    public always accepted."""
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text('[webhooks]\nallowed_networks = ["10.20.0.0/16", "fd00:1::/64"]\n')
    from_file = load_shared(str(cfg), env={}).webhooks.allowed_networks
    from_env = load_shared(None, env={
        "SMSGW_WEBHOOKS__ALLOWED_NETWORKS": '["10.20.0.0/16", "fd00:1::/64"]'}
    ).webhooks.allowed_networks
    assert from_file == from_env and [str(n) for n in from_file] == ["10.20.0.0/16",
                                                                     "fd00:1::/64"]
    for url in ("http://10.20.3.4:8080/cb", "http://①⓪.②⓪.3.4/cb", "http://[fd00:1::5]/cb",
                "https://example.com/cb"):
        assert check_url(url, allowed_networks=from_file) == url
    for url in ("http://10.21.0.1/cb", "http://10.0.0.1/cb", "http://127.0.0.1/cb",
                "http://localhost/cb", "http://[fd00:2::5]/cb", "http://[::ffff:10.21.0.1]/",
                "http://169.254.169.254/latest"):
        with pytest.raises(UnsafeUrl):
            check_url(url, allowed_networks=from_file)
    assert load_shared(None, env={}).webhooks.allowed_networks == ()  # the default: none


def _generated(tmp_path: Path, user_toml: str | None, *extra: str) -> dict:
    args = ["--data-dir", str(tmp_path / "data"), *extra]
    tmp_path.mkdir(parents=True, exist_ok=True)
    if user_toml is not None:
        user = tmp_path / "mine.toml"
        user.write_text(user_toml)
        args += ["--config", str(user)]
    opts = up.parse_options(args)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    plan = up.make_plan(opts, {})
    cfg = up.generated_config(plan, opts, database_url="postgresql://p@127.0.0.1:1/smsgw",
                              secret_file=up.server_secret(opts.data_dir))
    # what `up` would write must not turn the guard off for everything
    assert "allow_private_urls" not in cfg.get("webhooks", {}), cfg
    said: list[str] = []
    up.generated_config(plan, opts, database_url="postgresql://p@127.0.0.1:1/smsgw",
                        secret_file=up.server_secret(opts.data_dir), say=said.append)
    up.write_config(plan.config_path, cfg)
    loaded = load_shared(str(plan.config_path), env={})
    return {"cfg": cfg, "networks": loaded.webhooks.allowed_networks, "said": said}


REAL_CONNECTOR = '[[connectors]]\nname = "op"\nhost = "smsc.example.net"\nsystem_id = "me"\n'


def test_up_allows_loopback_only_for_its_own_simulator_demo(tmp_path: Path) -> None:
    """1. `up` with no config (embedded Postgres and the simulator): the generated config
    allows exactly 127.0.0.1/32 and ::1/128 and says so; 2. `up` with a user's real connector
    (embedded Postgres still): nothing non-public is allowed, loopback callbacks are refused;
    3. the same with `--sim` forced; 4. a user's own allowed_networks is kept as is."""
    for extra in ((), ("--sim",)):
        real = _generated(tmp_path / f"b{len(extra)}", REAL_CONNECTOR, *extra)
        assert real["networks"] == (), real["cfg"]
        with pytest.raises(UnsafeUrl):
            check_url("http://127.0.0.1:9/cb", allowed_networks=real["networks"])
        assert any("public addresses only" in s for s in real["said"]), real["said"]

    demo = _generated(tmp_path / "a", None)
    assert [str(n) for n in demo["networks"]] == ["127.0.0.1/32", "::1/128"]
    assert any("allowed_networks" in s and "demo" in s for s in demo["said"]), demo["said"]
    assert check_url("http://127.0.0.1:9/cb", allowed_networks=demo["networks"])
    with pytest.raises(UnsafeUrl):
        check_url("http://10.0.0.1/cb", allowed_networks=demo["networks"])

    own = _generated(tmp_path / "c", REAL_CONNECTOR
                     + '[webhooks]\nallowed_networks = ["10.20.0.0/16"]\n')
    assert [str(n) for n in own["networks"]] == ["10.20.0.0/16"]
