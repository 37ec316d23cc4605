"""`smsgw up`'s decisions and the config it writes, without starting anything."""

from __future__ import annotations

import tomllib
from pathlib import Path

from smsgw.services.admin import up
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.runtime.config import load_config


def _opts(tmp_path: Path, *extra: str) -> up.Options:
    return up.parse_options(["--data-dir", str(tmp_path / "data"), *extra])


def test_toml_writer_round_trips() -> None:
    """Nested tables, arrays of tables, inline lists and awkward strings read back equal."""
    data = {"database": {"url": 'postgresql://x@h:1/d?a="b"'},
            "connectors": [{"name": "a", "port": 2775, "tls": False, "encodings": ["gsm7"]},
                           {"name": "b", "stat_map": {"X": "delivered"}}],
            "webhooks": {"allowed_networks": ["10.20.0.0/16"],
                         "generic": {"src": {"secret_env": "S"}}},
            "retention": {"finished_after_s": 1.5}}
    assert tomllib.loads(up.toml_dumps(data)) == data


def test_no_config_means_embedded_postgres_and_simulator(tmp_path: Path) -> None:
    """Empty environment and no config: embedded Postgres, the simulator, and a generated
    config that a daemon loads (database, the `sim` connector, the server secret file)."""
    opts = _opts(tmp_path, "--smpp-port", "12775")
    plan = up.make_plan(opts, {})
    assert plan.embedded_pg and plan.sim
    opts.data_dir.mkdir(parents=True)
    cfg = up.generated_config(plan, opts, database_url="postgresql://p@127.0.0.1:1/smsgw",
                              secret_file=up.server_secret(opts.data_dir))
    up.write_config(plan.config_path, cfg)
    loaded = load_config("sender", SenderSettings, path=str(plan.config_path), env={})
    assert loaded.database.url == "postgresql://p@127.0.0.1:1/smsgw"
    assert [(c.name, c.port) for c in loaded.connectors] == [("sim", 12775)]
    assert loaded.server_secret is not None
    assert (opts.data_dir / "server-secret").stat().st_mode & 0o077 == 0


def test_a_configured_database_and_connector_replace_the_defaults(tmp_path: Path) -> None:
    """A database URL in the environment and a connector in the config: neither embedded
    Postgres nor simulator; the user's connector is kept as is."""
    user = tmp_path / "mine.toml"
    user.write_text('[[connectors]]\nname = "op"\nhost = "10.0.0.1"\nsystem_id = "me"\n')
    opts = _opts(tmp_path, "--config", str(user))
    plan = up.make_plan(opts, {"SMSGW_DATABASE_URL": "postgresql://db/x"})
    assert not plan.embedded_pg and not plan.sim
    cfg = up.generated_config(plan, opts, database_url="postgresql://db/x",
                              secret_file=tmp_path / "s")
    assert [c["name"] for c in cfg["connectors"]] == ["op"]
    assert "database" not in cfg  # the environment supplies it
    assert up.make_plan(up.parse_options(["--config", str(user), "--sim"]), {}).sim


def test_children_ports_and_start_order(tmp_path: Path) -> None:
    """Instances get the ports of docs/ARCHITECTURE.md "Ports" from the bases; start order is
    simulator, senders, processors, receivers (the reverse of the stop order)."""
    opts = _opts(tmp_path, "--senders", "2", "--api-port", "18080", "--metrics-port-base",
                 "19100")
    (tmp_path / "data").mkdir()
    plan = up.make_plan(opts, {})
    children = up.build_children(opts, plan, {"SMSGW_INSTANCE": "7", "NOTIFY_SOCKET": "x"})
    assert [c.name for c in children] == ["smsc-sim@1", "reporter@1", "sender@1", "sender@2",
                                          "processor@1", "receiver@1"]
    env = {c.name: c.env for c in children}
    assert env["sender@2"]["SMSGW_SENDER__METRICS_PORT"] == "19113"
    assert env["reporter@1"]["SMSGW_REPORTER__METRICS_PORT"] == "19104"
    assert env["receiver@1"]["SMSGW_RECEIVER__HTTP_PORT"] == "18080"
    assert "SMSGW_INSTANCE" not in env["sender@1"] and "NOTIFY_SOCKET" not in env["sender@1"]
    assert children[3].argv[-2:] == ["--instance", "2"]
    assert list(up.STOP_ORDER) == ["receiver", "processor", "sender", "reporter", "smsc-sim"]
