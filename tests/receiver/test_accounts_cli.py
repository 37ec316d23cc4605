"""`smsgw accounts`: create prints a key once, rotation, revocation, audit trail."""

from __future__ import annotations

import json

import pytest

from smsgw.services.admin import accounts
from smsgw.shared.domain.apikeys import hash_key

from ..harness import query_rows


def test_accounts_cli_lifecycle(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """1. create (JSON) prints a key whose HMAC is what is stored (the key itself is not)
    2. add-key gives a second valid key; revoke-key revokes the first by its prefix
    3. list shows one valid key; every change is in audit_log."""
    monkeypatch.setenv("SMSGW_SECURITY__SERVER_SECRET_ENV", "ACCOUNTS_TEST_SECRET")
    monkeypatch.setenv("ACCOUNTS_TEST_SECRET", "cli-secret")
    monkeypatch.delenv("SMSGW_TEST_DATABASE_URL", raising=False)
    base = ["--database-url", db_url]
    assert accounts.main(["create", "shop", "--category", "marketing", "--rate", "10",
                          "--allowed-sender", "Shop", "--json", *base]) == 0
    created = json.loads(capsys.readouterr().out)
    key = created["key"]
    stored = query_rows(db_url, "SELECT key_hash, prefix FROM api_keys")
    assert stored[0]["key_hash"] == hash_key(b"cli-secret", key)
    assert key not in str(stored)
    assert accounts.main(["add-key", "shop", *base]) == 0
    assert "shown once" in capsys.readouterr().out
    assert accounts.main(["revoke-key", "shop", key[:12], *base]) == 0
    assert accounts.main(["list", "--json", *base]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert listed[0]["valid_keys"] == 1 and listed[0]["allowed_senders"] == ["Shop"]
    assert accounts.main(["create", "shop", *base]) == 2  # the name is taken
    actions = [r["action"] for r in query_rows(db_url, "SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["account_created", "api_key_created", "api_key_created",
                       "api_key_revoked"]
