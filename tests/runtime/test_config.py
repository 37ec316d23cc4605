"""Config loading: precedence, unknown keys and variables, other daemons' sections, secrets."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from smsgw.services.admin.checkconfig import SECTIONS
from smsgw.services.processor.settings import ProcessorSettings
from smsgw.services.receiver.settings import ReceiverSettings
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.core.logging import configure_logging, get_logger, mask_number
from smsgw.shared.runtime.config import load_all, load_config, load_shared, resolve_secret

DB = {"SMSGW_DATABASE_URL": "postgresql://smsgw:dbpass@127.0.0.1:5432/smsgw"}


@contextlib.contextmanager
def json_logs_to(stream: io.StringIO, daemon: str) -> Iterator[None]:
    """Configure the daemon's JSON logging into `stream`, then restore the test process's."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structlog.get_config())
    try:
        configure_logging("info", daemon, 1)
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.configure(**saved[2])


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "smsgw.toml"
    path.write_text(text)
    return str(path)


def errors_of(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return "\n".join(exc.value.errors)


def test_precedence_env_over_file_over_defaults(tmp_path: Path) -> None:
    """1. defaults: drain_s 20; 2. the file sets 10 and poll_s 2; 3. env sets drain_s 3.
    The env wins for drain_s, the file for poll_s, defaults for the rest."""
    path = write(tmp_path, "[sender]\ndrain_s = 10\npoll_s = 2\n")
    assert load_config("sender", SenderSettings, path=None, env=DB).daemon.drain_s == 20
    cfg = load_config("sender", SenderSettings, path=path, env=DB)
    assert (cfg.daemon.drain_s, cfg.daemon.poll_s) == (10, 2)
    cfg = load_config("sender", SenderSettings, path=path,
                      env={**DB, "SMSGW_SENDER__DRAIN_S": "3"})
    assert (cfg.daemon.drain_s, cfg.daemon.poll_s, cfg.daemon.lease_s) == (3, 2, 120)


def test_database_url_shorthand_and_nested_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "postgresql://file/db"\npool_max_size = 4\n')
    cfg = load_config("processor", ProcessorSettings, path=path, env=DB)
    assert cfg.database.url == DB["SMSGW_DATABASE_URL"]
    assert cfg.database.pool_max_size == 4
    cfg = load_config("processor", ProcessorSettings, path=path,
                      env={"SMSGW_DATABASE__POOL_MAX_SIZE": "7"})
    assert (cfg.database.url, cfg.database.pool_max_size) == ("postgresql://file/db", 7)


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[sender]\ndrian_s = 3\n[databse]\nurl = 'x'\n")
    with pytest.raises(ConfigError) as exc:
        load_config("sender", SenderSettings, path=path, env=DB)
    text = errors_of(exc)
    assert "sender.drian_s: unknown key" in text
    assert "databse: unknown key" in text
    assert len(exc.value.errors) == 2


def test_unknown_env_variable_is_named(tmp_path: Path) -> None:
    env = {**DB, "SMSGW_DATABSE_URL": "x", "SMSGW_SENDER__DRIAN_S": "1", "SMSGW_FOO": "1"}
    with pytest.raises(ConfigError) as exc:
        load_config("sender", SenderSettings, path=None, env=env)
    text = errors_of(exc)
    assert "SMSGW_DATABSE_URL: unknown environment variable" in text
    assert "SMSGW_SENDER__DRIAN_S (sender.drian_s): unknown key" in text
    assert "SMSGW_FOO: unknown environment variable" in text


def test_bad_value_names_its_variable_and_known_names_pass() -> None:
    env = {**DB, "SMSGW_SENDER__DRAIN_S": "soon", "SMSGW_TEST_DATABASE_URL": "postgresql://t"}
    with pytest.raises(ConfigError) as exc:
        load_config("sender", SenderSettings, path=None, env=env)
    assert exc.value.errors[0].startswith("SMSGW_SENDER__DRAIN_S (sender.drain_s): ")
    assert len(exc.value.errors) == 1


def test_other_daemons_sections_are_ignored_but_check_config_sees_them(tmp_path: Path) -> None:
    """1. [processor] has a typo and SMSGW_RECEIVER__X is unknown; 2. the sender loads fine;
    3. load_all (check-config) reports both."""
    path = write(tmp_path, "[processor]\nbacth = 5\n[sender]\nbatch = 7\n")
    env = {**DB, "SMSGW_RECEIVER__X": "1"}
    assert load_config("sender", SenderSettings, path=path, env=env).daemon.batch == 7
    with pytest.raises(ConfigError) as exc:
        load_all(path, env, sections=SECTIONS)
    text = errors_of(exc)
    assert "processor.bacth: unknown key" in text
    assert "SMSGW_RECEIVER__X (receiver.x): unknown key" in text


def test_missing_explicit_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config .*nope\.toml: file not found"):
        load_config("sender", SenderSettings, path=str(tmp_path / "nope.toml"), env=DB)
    path = write(tmp_path, "[sender\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config("sender", SenderSettings, path=path, env=DB)


def test_database_url_required_for_daemons_not_for_shared_load() -> None:
    with pytest.raises(ConfigError, match=r"database\.url: required"):
        load_config("sender", SenderSettings, path=None, env={})
    assert load_shared(None, {}).database.url is None


def test_instance_sets_default_ports() -> None:
    """docs/ARCHITECTURE.md "Ports": metrics 9100 + 10 x (instance - 1) + n; receiver API 8080 +
    (instance - 1)."""
    env = {**DB, "SMSGW_INSTANCE": "2"}
    assert load_config("sender", SenderSettings, path=None, env=env).daemon.metrics_port == 9113
    rcv = load_config("receiver", ReceiverSettings, path=None, env=env)
    assert (rcv.daemon.metrics_port, rcv.daemon.http_port, rcv.instance) == (9111, 8081, 2)
    rcv = load_config("receiver", ReceiverSettings, path=None, env=env, instance=3)
    assert (rcv.daemon.metrics_port, rcv.daemon.http_port) == (9121, 8082)
    with pytest.raises(ConfigError, match="SMSGW_INSTANCE: must be a positive integer"):
        load_config("sender", SenderSettings, path=None, env={**DB, "SMSGW_INSTANCE": "0"})


def test_secrets_resolved_from_env_and_file_and_never_shown(tmp_path: Path) -> None:
    """1. twilio token from a variable, vonage secret and server secret from files;
    2. the values are readable through SecretStr; 3. repr, dumps and the config_loaded log
    line contain none of them, nor the database password."""
    (tmp_path / "vonage").write_text("vonage-s3cret\n")
    (tmp_path / "server").write_text("server-s3cret")
    path = write(tmp_path, f"""
[webhooks]
public_base_url = "https://sms.example.com"
[webhooks.twilio]
auth_token_env = "TWILIO_TOKEN"
[webhooks.vonage]
signature_secret_file = "{tmp_path / 'vonage'}"
signature_method = "sha512"
[webhooks.generic.shop]
secret_env = "SMSGW_SHOP_SECRET"
[security]
server_secret_file = "{tmp_path / 'server'}"
""")
    env = {**DB, "TWILIO_TOKEN": "twilio-s3cret", "SMSGW_SHOP_SECRET": "shop-s3cret"}
    cfg = load_config("processor", ProcessorSettings, path=path, env=env)
    assert cfg.webhooks.twilio and cfg.webhooks.twilio.auth_token
    assert cfg.webhooks.twilio.auth_token.get_secret_value() == "twilio-s3cret"
    assert cfg.webhooks.vonage and cfg.webhooks.vonage.signature_secret
    assert cfg.webhooks.vonage.signature_secret.get_secret_value() == "vonage-s3cret"
    shop = cfg.webhooks.generic["shop"].secret
    assert shop and shop.get_secret_value() == "shop-s3cret"
    assert cfg.server_secret and cfg.server_secret.get_secret_value() == "server-s3cret"

    stream = io.StringIO()
    with json_logs_to(stream, "processor"):
        get_logger("test").info("config_loaded", config=cfg.redacted_dump())
    shown = [repr(cfg), str(cfg), str(cfg.model_dump(mode="json")["webhooks"]),
             stream.getvalue()]
    assert "config_loaded" in shown[-1]
    for text in shown:
        for secret in ("twilio-s3cret", "vonage-s3cret", "shop-s3cret", "server-s3cret",
                       "dbpass"):
            assert secret not in text


def test_secret_in_file_or_missing_source_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[security]\nserver_secret = "oops"\n')
    with pytest.raises(ConfigError, match="server_secret: secrets are never written"):
        load_config("sender", SenderSettings, path=path, env=DB)
    path = write(tmp_path, '[webhooks.twilio]\nauth_token_env = "NOT_SET_ANYWHERE"\n')
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        load_config("sender", SenderSettings, path=path, env=DB)
    with pytest.raises(ValueError, match="not both"):
        resolve_secret("A", "/b", {"A": "x"})


def test_routes_validate_and_lists_come_as_json() -> None:
    env = {**DB, "SMSGW_ROUTES": '[{"prefix": "44", "connectors": ["a", "b"], "weights": [1]}]'}
    with pytest.raises(ConfigError, match=r"SMSGW_ROUTES \(routes\[0\]\): weights must have"):
        load_config("sender", SenderSettings, path=None, env=env)
    env["SMSGW_ROUTES"] = '[{"prefix": "44", "connectors": ["a", "b"], "weights": [3, 1]}]'
    cfg = load_config("sender", SenderSettings, path=None, env=env)
    assert cfg.routes[0].connectors == ["a", "b"]


def test_mask_number() -> None:
    assert mask_number("+447911123456") == "+4479*****456"
    assert mask_number("12345") == "1****"
    assert mask_number(None) is None


def test_peer_setting_reads_another_daemons_key_from_file_and_env(tmp_path: Path) -> None:
    """The receiver and the CLI read the reporter's `max_range_days` without validating the
    reporter's section: the file's value, an environment override, None when unset; a value
    the reporter would refuse falls back to the default."""
    from smsgw.shared.domain.reports import MAX_RANGE_DAYS, configured_range_days
    from smsgw.shared.runtime.config import peer_setting
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text("[reporter]\nmax_range_days = 30\nconcurrency = 2\n")
    assert peer_setting(str(cfg), "reporter", "max_range_days", env={}) == 30
    assert configured_range_days(peer_setting(
        str(cfg), "reporter", "max_range_days", env={"SMSGW_REPORTER__MAX_RANGE_DAYS": "45"})) == 45
    assert peer_setting(str(cfg), "reporter", "dir", env={}) is None
    assert peer_setting(str(tmp_path / "none.toml"), "reporter", "max_range_days",
                        env={}) is None
    assert configured_range_days(30) == 30 and configured_range_days("45") == 45
    for bad in (None, 0, 5000, "many", True, 2.5):
        assert configured_range_days(bad) == MAX_RANGE_DAYS
