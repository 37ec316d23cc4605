"""Every admin command works with no option next to a running `smsgw up`, as a new user runs
them: in the folder that holds up's data folder `.smsgw`, with no `--config`, `--database-url`
or `--data-dir` and no `SMSGW_*` variable. They find up's database (and its password file) and
its server secret there. Without them, the error names the option or file that would help.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from smsgw.shared.queue import store
from smsgw.shared.runtime.config import load_shared

pytestmark = pytest.mark.timeout(400)
NUMBER = "+447700900777"


def smsgw(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`smsgw ARGS` exactly as typed: no option added, in `cwd`."""
    return subprocess.run([sys.executable, "-m", "smsgw.services.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"{res.args[3:]} exit {res.returncode}:\n{res.stdout}{res.stderr}"
    return res.stdout


def post_message(api: str, key: str, to: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{api}/v1/messages", method="POST",
                                 data=json.dumps({"to": to, "from": "smsgw",
                                                  "text": "hi"}).encode(),
                                 headers={"Authorization": f"Bearer {key}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


async def add_mo(config: Path, from_addr: str) -> int:
    """One MO from `from_addr`, stored straight into up's database (as the receiver would)."""
    database = load_shared(str(config), {}).database
    assert database.url is not None
    from smsgw.shared.core import db
    conn = await db.connect(database.url, **database.connect_kwargs())
    try:
        [res] = await store.enqueue(conn, "inbound", [{
            "channel": "http", "provider": "generic", "from_addr": from_addr,
            "to_addr": "80080", "body": "NOTHING MATCHES THIS"}])
        return int(res.id)
    finally:
        await conn.close()


def test_every_admin_command_works_with_no_option_next_to_smsgw_up(up_factory: Any,
                                                                   ops: Any) -> None:
    """1. `smsgw up` with its data folder `.smsgw` in a folder; wait for its banner.
    2. From that folder, with no option: `accounts create` prints a key the running receiver
       accepts (so the server secret is up's); `accounts list/add-key/callback-secret/update/
       revoke-key`, `rules list/export/test`, `status`, `send`, `trace ID|NUMBER [--mt|--mo]`,
       `requeue --dry-run`, `erase --dry-run`, `migrate --dry-run` and `check-config` exit 0.
    3. The options work before and after a subcommand (`rules --data-dir D list`, `rules list
       --data-dir D`)."""
    up = up_factory(data_name=".smsgw")
    folder = up.data_dir.parent
    env = ops.clean_env()
    up.start()
    up.wait_up()

    key = ok(smsgw(folder, env, "accounts", "create", "newcomer")).strip().splitlines()[-1]
    assert key.startswith("smsgw_")
    status, answer = post_message(up.api, key, NUMBER)
    assert status == 202, answer
    mt_id = int(answer["id"])
    accounts = json.loads(ok(smsgw(folder, env, "accounts", "list", "--json")))
    assert "newcomer" in {a["name"] for a in accounts}
    assert ok(smsgw(folder, env, "accounts", "add-key", "newcomer")).strip()
    assert ok(smsgw(folder, env, "accounts", "callback-secret", "newcomer")).strip()
    ok(smsgw(folder, env, "accounts", "update", "newcomer", "--rate", "10"))

    rules = ok(smsgw(folder, env, "rules", "list"))
    assert rules.strip(), "the demo rules are listed"
    assert json.loads(ok(smsgw(folder, env, "rules", "export")))["rules"]
    ok(smsgw(folder, env, "rules", "--data-dir", ".smsgw", "list"))
    ok(smsgw(folder, env, "rules", "list", "--data-dir", ".smsgw"))
    smsgw(folder, env, "rules", "test", "HELLO", "--from", NUMBER, "--to", "80080")  # 0 or 1
    tested = smsgw(folder, env, "rules", "test", "HELLO", "--from", NUMBER, "--to", "80080",
                   "--json")
    assert tested.returncode in (0, 1) and "rule" in json.loads(tested.stdout), tested.stderr

    st = json.loads(ok(smsgw(folder, env, "status", "--json")))
    assert {q["queue"] for q in st["queues"]} >= {"outbound", "inbound"}
    sent = ok(smsgw(folder, env, "send", "--to", NUMBER, "--text", "from the CLI"))
    assert sent.startswith("accepted: id ")

    [t] = json.loads(ok(smsgw(folder, env, "trace", str(mt_id), "--mt", "--json")))
    assert t["message"]["to_addr"] == NUMBER
    mo_id = asyncio.run(add_mo(up.data_dir / "smsgw.toml", NUMBER))
    both = json.loads(ok(smsgw(folder, env, "trace", NUMBER, "--json")))
    assert {("mt", mt_id), ("mo", mo_id)} <= {(m["kind"], m["id"]) for m in both["messages"]}
    mts = json.loads(ok(smsgw(folder, env, "trace", NUMBER, "--mt", "--json")))
    assert mt_id in {m["id"] for m in mts["messages"]}
    assert {m["kind"] for m in mts["messages"]} == {"mt"}
    mos = json.loads(ok(smsgw(folder, env, "trace", NUMBER, "--mo", "--json")))
    assert [(m["kind"], m["id"]) for m in mos["messages"]] == [("mo", mo_id)]

    assert ok(smsgw(folder, env, "requeue", "outbound", "--all", "--dry-run")).startswith(
        "would requeue 0 dead row(s) of outbound")
    erased = json.loads(ok(smsgw(folder, env, "erase", NUMBER, "--dry-run", "--json")))
    assert erased["dry_run"] is True and erased["removed"]
    assert "up to date" in ok(smsgw(folder, env, "migrate", "--dry-run"))
    assert "config OK" in ok(smsgw(folder, env, "check-config"))


ADMIN_HELP = [["accounts"], ["accounts", "create"], ["accounts", "list"], ["rules"],
              ["rules", "import"], ["rules", "test"], ["status"], ["trace"], ["requeue"],
              ["send"], ["erase"], ["migrate"], ["check-config"], ["reports"],
              ["reports", "create"]]


@pytest.mark.parametrize("command", ADMIN_HELP, ids=" ".join)
def test_every_admin_help_explains_the_three_options_alike(command: list[str],
                                                           tmp_path: Path, ops: Any) -> None:
    """`smsgw <command> --help` lists --config, --database-url and --data-dir with the same
    words, and says what happens with none of them."""
    from smsgw.shared.runtime import admin_config

    out = " ".join(ok(smsgw(tmp_path, ops.clean_env(), *command, "--help")).split())
    for flag, text in (("--config FILE", admin_config.HELP_CONFIG),
                       ("--database-url URL", admin_config.HELP_DATABASE_URL),
                       ("--data-dir DIR", admin_config.HELP_DATA_DIR)):
        assert f"{flag} {' '.join(text.split())}" in out, (flag, out)
    assert "next to" in out and "smsgw up" in out


def test_without_a_secret_or_a_database_the_error_names_the_fix(tmp_path: Path,
                                                                 ops: Any) -> None:
    """In a folder with no smsgw.toml and no .smsgw: `accounts create` exits 78 naming the
    secret's keys, variable, option and up's missing file; `status` exits 78 naming
    --database-url, SMSGW_DATABASE_URL and --data-dir."""
    env = ops.clean_env()
    res = smsgw(tmp_path, env, "accounts", "create", "someone")
    assert res.returncode == 78, res.stderr
    for words in ("security.server_secret", "server_secret_file", "--config FILE",
                  "SMSGW_SECURITY__SERVER_SECRET_FILE", "server-secret", "--data-dir DIR",
                  "there is no .smsgw/smsgw.toml"):
        assert words in res.stderr, (words, res.stderr)
    res = smsgw(tmp_path, env, "status")
    assert res.returncode == 78, res.stderr
    for words in ("database.url", "--database-url URL", "SMSGW_DATABASE_URL", "--data-dir DIR"):
        assert words in res.stderr, (words, res.stderr)


def test_config_and_data_dir_before_or_after_the_subcommand(tmp_path: Path, db_url: str,
                                                            ops: Any) -> None:
    """A config naming only the database, and a data folder holding only a server secret
    config: with --config alone the secret is missing and the error says --data-dir; with
    both (before or after the subcommand) `accounts create` works; `rules` takes --config
    on either side of its subcommand."""
    env = ops.clean_env()
    cfg = tmp_path / "db-only.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n')
    data = tmp_path / "updata"
    data.mkdir()
    (data / "server-secret").write_text("a-server-secret\n")
    (data / "smsgw.toml").write_text(
        f'[security]\nserver_secret_file = "{data / "server-secret"}"\n')
    res = smsgw(tmp_path, env, "accounts", "create", "a1", "--config", str(cfg))
    assert res.returncode == 78 and "--data-dir" in res.stderr, res.stderr
    ok(smsgw(tmp_path, env, "accounts", "create", "a1", "--config", str(cfg),
             "--data-dir", str(data)))
    ok(smsgw(tmp_path, env, "accounts", "--config", str(cfg), "--data-dir", str(data),
             "create", "a2"))
    listed = json.loads(ok(smsgw(tmp_path, env, "accounts", "--database-url", db_url,
                                 "list", "--json")))
    assert {"a1", "a2"} <= {a["name"] for a in listed}
    ok(smsgw(tmp_path, env, "rules", "--config", str(cfg), "list"))
    ok(smsgw(tmp_path, env, "rules", "list", "--config", str(cfg)))
    ok(smsgw(tmp_path, env, "migrate", "--dry-run", "--database-url", db_url))
