"""How every admin command finds its configuration: `--config`, `--database-url`, `--data-dir`.

Every admin command (`accounts`, `rules`, `status`, `trace`, `requeue`, `send`, `erase`,
`migrate`, `check-config`) takes these three options the same way — before or after its
subcommand, with the same help text (`add_target_args`) — and resolves them the same way
(`AdminConfig`):

1. `--database-url URL` names the database (a password goes in the URL, `PGPASSWORD` or
   `~/.pgpass`).
2. The config is `--config FILE`, else `./smsgw.toml` when present, with the `SMSGW_*`
   environment over it, loaded and validated as the daemons load it.
3. What the config does not name — the database, the server secret — comes from the config
   `smsgw up` writes into its data folder, `DATA_DIR/smsgw.toml` (`--data-dir DIR`, default
   `./.smsgw`). That file names up's database, the file with its password
   (`DATA_DIR/pg-password`) and the server secret file (`DATA_DIR/server-secret`), so with no
   option at all, next to a running `smsgw up` (same working directory), every admin command
   finds everything it needs. An explicit `--config` without `--data-dir` skips this step.

A missing piece is a `ConfigError` whose message names the options, keys and files that would
provide it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from smsgw.shared.core import db
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.config import DEFAULT_CONFIG_FILE, SharedConfig, load_shared

DEFAULT_DATA_DIR = ".smsgw"
UP_CONFIG_NAME = "smsgw.toml"  # the config `smsgw up` writes into its data folder
UP_SERVER_SECRET = "server-secret"  # the server secret `smsgw up` generates (0600)
UP_PG_PASSWORD = "pg-password"  # the embedded Postgres' password (0600)

HELP_CONFIG = ("config file (default: ./smsgw.toml when present); SMSGW_* variables override "
               "it")
HELP_DATABASE_URL = ("Postgres URL, password included if it needs one (default: the config's "
                     "[database] url, else smsgw up's database)")
HELP_DATA_DIR = (f"smsgw up's data folder: what the config does not name (the database, the "
                 f"server secret) is taken from its {UP_CONFIG_NAME} (default: "
                 f"./{DEFAULT_DATA_DIR}; not consulted when --config is given without "
                 f"--data-dir)")
TARGET_EPILOG = (f"With no --config, --database-url or --data-dir, next to a running `smsgw up` "
                 f"(same working directory) the command uses up's database and server secret "
                 f"(./{DEFAULT_DATA_DIR}/{UP_CONFIG_NAME}).")


def add_target_args(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """Add `--config`, `--database-url` and `--data-dir` to `parser`.

    For a command with subcommands, call it on the top-level parser and, with
    `subcommand=True`, on each subcommand's parser: those get `argparse.SUPPRESS` defaults, so
    an option given before the subcommand is not reset by the subcommand's parser.
    """
    default = argparse.SUPPRESS if subcommand else None
    parser.add_argument("--config", metavar="FILE", default=default, help=HELP_CONFIG)
    parser.add_argument("--database-url", metavar="URL", default=default,
                        help=HELP_DATABASE_URL)
    parser.add_argument("--data-dir", metavar="DIR", default=default, help=HELP_DATA_DIR)


def data_dir(args: argparse.Namespace) -> Path:
    """The `smsgw up` data folder these arguments name (default ./.smsgw)."""
    return Path(getattr(args, "data_dir", None) or DEFAULT_DATA_DIR)


def default_config_path(args: argparse.Namespace) -> str | None:
    """The file a loader of daemon sections reads when --config is not given (`rules test`,
    `check-config`): ./smsgw.toml when present, else up's generated config when present (None:
    the environment and the defaults only)."""
    if Path(DEFAULT_CONFIG_FILE).is_file():
        return None  # the loaders' own default
    up_config = data_dir(args) / UP_CONFIG_NAME
    return str(up_config) if up_config.is_file() else None


@dataclass
class AdminConfig:
    """The configuration an admin command runs with (see the module docstring)."""

    config: SharedConfig
    config_file: str | None
    database_url: str | None
    data_dir: Path
    use_data_dir: bool
    env: Mapping[str, str] = field(repr=False)
    _up: SharedConfig | None = field(default=None, repr=False)

    @classmethod
    def load(cls, args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> AdminConfig:
        """Read the config (`--config`, else ./smsgw.toml) and the environment; ConfigError
        lists every problem."""
        config_file = getattr(args, "config", None)
        return cls(config=load_shared(config_file, env), config_file=config_file,
                   database_url=getattr(args, "database_url", None), data_dir=data_dir(args),
                   use_data_dir=config_file is None or getattr(args, "data_dir", None) is not None,
                   env=env)

    @property
    def up_config_file(self) -> Path:
        """`smsgw up`'s generated config in the data folder."""
        return self.data_dir / UP_CONFIG_NAME

    def up_config(self) -> SharedConfig | None:
        """`smsgw up`'s generated config, when it is to be used and exists."""
        if self._up is None and self.use_data_dir and self.up_config_file.is_file():
            self._up = load_shared(str(self.up_config_file), self.env)
        return self._up

    def config_path(self) -> str | None:
        """The file a loader of daemon sections should read (see `default_config_path`)."""
        return self.config_file if self.config_file is not None else default_config_path(
            argparse.Namespace(data_dir=self.data_dir))

    def database(self) -> tuple[str, dict[str, Any]]:
        """The database URL and the asyncpg keyword arguments (its password) to connect with."""
        if self.database_url:
            try:
                db.primary_url(self.database_url)
            except ValueError as exc:
                raise ConfigError([f"--database-url: {exc}"]) from None
            return self.database_url, {}
        if self.config.database.url:
            return self.config.database.url, self.config.database.connect_kwargs()
        up = self.up_config()
        if up is not None and up.database.url:
            return up.database.url, up.database.connect_kwargs()
        raise ConfigError([
            "database.url: not configured: pass --database-url URL, set [database] url in "
            f"the config ({self._config_hint()}) or SMSGW_DATABASE_URL, or run this next to "
            f"a running `smsgw up` ({self._up_hint()})"])

    def server_secret(self) -> SecretStr:
        """`[security] server_secret`: the key of API keys, suppression hashes and callback
        signing secrets; it must be the one the daemons use."""
        if self.config.server_secret is not None:
            return self.config.server_secret
        up = self.up_config()
        if up is not None and up.server_secret is not None:
            return up.server_secret
        raise ConfigError([
            "security.server_secret: not configured: set [security] server_secret_file (or "
            f"server_secret_env) in the config ({self._config_hint()}) or "
            "SMSGW_SECURITY__SERVER_SECRET_FILE=PATH, to the secret the daemons use, or run "
            f"this next to a running `smsgw up`, whose secret is {UP_SERVER_SECRET} in its "
            f"data folder ({self._up_hint()})"])

    def _config_hint(self) -> str:
        if self.config_file is not None:
            return f"--config {self.config_file}"
        if Path(DEFAULT_CONFIG_FILE).is_file():
            return f"./{DEFAULT_CONFIG_FILE}"
        return f"--config FILE; there is no ./{DEFAULT_CONFIG_FILE}"

    def _up_hint(self) -> str:
        if not self.use_data_dir:
            return (f"--config was given, so its data folder is read only with --data-dir DIR; "
                    f"default ./{DEFAULT_DATA_DIR}")
        if not self.up_config_file.is_file():
            return (f"--data-dir DIR, default ./{DEFAULT_DATA_DIR}; there is no "
                    f"{self.up_config_file}")
        return f"--data-dir {self.data_dir}: {self.up_config_file} does not name it either"


__all__ = ["DEFAULT_DATA_DIR", "TARGET_EPILOG", "UP_CONFIG_NAME", "UP_PG_PASSWORD",
           "UP_SERVER_SECRET", "AdminConfig", "add_target_args", "data_dir",
           "default_config_path"]
