"""`[[connectors]]` settings: defaults, validation, lazy secrets, session config."""

import pytest
from pydantic import ValidationError

from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.session import BindMode


def test_defaults_and_session_config(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    c = ConnectorSettings(name="op-a", system_id="esme", password_file=str(secret), tps=100)
    assert c.window == 10 and c.long_message == "udh8" and c.encodings == ["gsm7", "ucs2"]
    assert c.transient_mo_status == 0x64 and c.operator_name == "op-a"
    cfg = c.session_config(bind_mode=BindMode.RECEIVER, tps=25)
    assert cfg.password == "s3cret" and cfg.tps == 25 and cfg.bind_mode is BindMode.RECEIVER
    assert "s3cret" not in repr(c) and "s3cret" not in repr(cfg)
    assert "s3cret" not in repr(c.password())


def test_password_from_env_is_read_lazily():
    c = ConnectorSettings(name="a", system_id="e", password_env="SMSC_PW")
    with pytest.raises(ValueError, match="SMSC_PW"):
        c.password({})
    assert c.password({"SMSC_PW": "x"}).get_secret_value() == "x"


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_key": 1},
        {"password_env": "A", "password_file": "/x"},
        {"time_zone": "Mars/Olympus"},
        {"receipt_id_mode": "rot13"},
        {"window": 0},
        {"data_coding_0": "latin1"},  # gsm7 in encodings needs data_coding_0 gsm7
        {"system_id": "x" * 16},
        {"stat_map": {"DELIVRD": "great"}},
    ],
)
def test_invalid_settings_are_rejected(bad):
    with pytest.raises(ValidationError):
        ConnectorSettings(**{"name": "a", "system_id": "e", **bad})


def test_overrides_and_tls():
    c = ConnectorSettings(
        name="b", system_id="e", stat_map={"acceptd": "delivered"}, receipt_id_mode="hex_to_dec",
        time_zone="Africa/Lagos", tls=True, tls_verify=False, data_coding_0="latin1",
        encodings=["latin1", "ucs2"],
    )  # fmt: skip
    assert c.stat_map == {"ACCEPTD": "delivered"}
    assert c.zone.key == "Africa/Lagos"
    ctx = c.ssl_context()
    assert ctx is not None and not ctx.check_hostname
