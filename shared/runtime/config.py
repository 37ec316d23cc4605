"""Configuration: one TOML file plus `SMSGW_*` environment overrides, validated once at start.

Precedence: environment > TOML file > defaults. The file (`--config PATH`, default `smsgw.toml`
in the working directory when it exists) has shared sections (`[database]`, `[[connectors]]`,
`[[routes]]`, `[webhooks]`, `[retention]`, `[security]`) and one section per daemon
(`[receiver]`, `[processor]`, `[sender]`). A daemon validates the shared sections and its own,
and ignores the other daemons' sections (in the file and in the environment).

Environment names: `SMSGW_<SECTION>__<KEY>` with `__` for each nesting level
(`SMSGW_SENDER__DRAIN_S=10`, `SMSGW_WEBHOOKS__TWILIO__AUTH_TOKEN_ENV=TW_TOKEN`); list- or
table-valued keys take JSON (`SMSGW_ROUTES='[{"connectors": ["a"]}]'`). The one shorthand is
`SMSGW_DATABASE_URL`. `SMSGW_INSTANCE` (the instance number) and `SMSGW_TEST_DATABASE_URL` (tests
only) are known names, and so is any variable a `*_env` key names. Every other `SMSGW_*` name is
an error, as is every unknown key in the file: `ConfigError` lists each problem as
`path: message`, and `main()` exits 78 (EX_CONFIG).

Why a hand-written env -> dict merge instead of pydantic-settings' sources: pydantic-settings
ignores unknown variables (we must scan `SMSGW_*` ourselves anyway), cannot drop the other
daemons' sections per daemon, and its errors do not say which variable a bad value came from.
Merging two plain dicts and validating once with pydantic gives all of that in ~100 lines, with
`extra="forbid"` on every model.

Secrets are never written in the file: a `*_env` / `*_file` key names where the secret lives
(environment variable, or a file such as a systemd credential), and loading resolves it into a
`SecretStr` (shown as `**********` in repr, logs and dumps).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    model_validator,
)

from smsgw.shared.core import db
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.queue.retention import RetentionSettings
from smsgw.shared.smpp.connector import ConnectorSettings

DAEMONS: tuple[str, ...] = ("receiver", "processor", "sender", "reporter")
# n in the metrics port of docs/ARCHITECTURE.md "Ports", 9100 + 10 x (instance - 1) + n
DAEMON_PORT_OFFSET: dict[str, int] = {"receiver": 1, "processor": 2, "sender": 3, "reporter": 4}
METRICS_PORT_BASE = 9100
RECEIVER_HTTP_PORT_BASE = 8080  # the receiver API's port: 8080 + (instance - 1), "Ports"
ESME_PORT_BASE = 2776  # the receiver's SMPP server for ESMEs: 2776 + (instance - 1)
DEFAULT_CONFIG_FILE = "smsgw.toml"
ENV_PREFIX = "SMSGW_"
ENV_INSTANCE = "SMSGW_INSTANCE"
ENV_DATABASE_URL = "SMSGW_DATABASE_URL"
# Known names that are not config keys: read elsewhere (tests, instance number).
KNOWN_ENV = frozenset({ENV_INSTANCE, "SMSGW_TEST_DATABASE_URL"})
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Section(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- secrets ------------------------------------------------------------------------------

def resolve_secret(env_name: str | None, file_path: str | None,
                   env: Mapping[str, str] | None = None) -> SecretStr | None:
    """Read a secret from the environment variable `env_name` or the file `file_path`.

    Returns None when neither is configured. A configured but missing variable or file is a
    `ValueError` (reported as a config error). A file's trailing newline is dropped.
    """
    env = os.environ if env is None else env
    if env_name and file_path:
        raise ValueError("set either the *_env or the *_file key, not both")
    if env_name:
        if env_name not in env:
            raise ValueError(f"environment variable {env_name} is not set")
        return SecretStr(env[env_name])
    if file_path:
        try:
            return SecretStr(Path(file_path).read_text("utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise ValueError(f"cannot read secret file {file_path}: {exc.strerror}") from exc
    return None


class SecretSection(Section):
    """A section with secrets: `_secrets` maps each resolved field to its (env key, file key).

    The resolved field may not be written in the file; it is filled from the environment
    variable or file named by the two keys, using the `env` in the validation context.
    """

    _secrets: ClassVar[dict[str, tuple[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _resolve_secrets(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        env = (info.context or {}).get("env", os.environ)
        data = dict(data)
        for field, (env_key, file_key) in cls._secrets.items():
            if field in data:
                raise ValueError(f"{field}: secrets are never written in the config; "
                                 f"set {env_key} or {file_key}")
            data[field] = resolve_secret(data.get(env_key), data.get(file_key), env)
        return data


# --- shared sections ----------------------------------------------------------------------

class DatabaseSettings(SecretSection):
    """`[database]`: the Postgres every daemon shares (`SMSGW_DATABASE_URL` for `url`).

    The password comes from `password_env` or `password_file` (what `smsgw up` writes for its
    embedded Postgres) and is passed to the driver separately, never inside `url`.
    """

    _secrets: ClassVar[dict[str, tuple[str, str]]] = {
        "password": ("password_env", "password_file")}
    url: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    password: SecretStr | None = Field(default=None, exclude=True)
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout_s: float = Field(default=5, gt=0)
    command_timeout_s: float = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _one_password(self) -> Self:
        if self.url:  # several hosts: only a primary (db.primary_url); refuses standby attrs
            db.primary_url(self.url)
        if self.password is not None and self.url and _url_password(self.url) is not None:
            raise ValueError("url carries a password and password_env/password_file is set: "
                             "keep the password out of the URL")
        return self

    def connect_kwargs(self) -> dict[str, Any]:
        """What asyncpg's connect/create_pool take next to `url`: the password, as a callable
        (asyncpg calls it per connection), so the plain value sits in no argument or local."""
        return {"password": self.password.get_secret_value} if self.password else {}

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The URL may carry a password: never show it in repr (logs use `redacted_url`).
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" and value else value)


class RouteSettings(Section):
    """`[[routes]]`: destination prefix -> ordered connector failover list.

    `when_stopped`: what a message does when the connector it would take was stopped or
    isolated by an operator (`smsgw connectors stop|isolate`): `failover` (default) skips it
    like an unbound connector, `wait` keeps the message queued until it is started again."""

    prefix: str = Field(default="", pattern=r"^[0-9]*$")  # E.164 digits; "" = default route
    connectors: list[str] = Field(min_length=1)
    weights: list[int] | None = None
    account: str | None = None
    when_stopped: Literal["failover", "wait"] = "failover"

    @model_validator(mode="after")
    def _weights_match(self) -> Self:
        if self.weights is not None and len(self.weights) != len(self.connectors):
            raise ValueError("weights must have one entry per connector")
        return self


class TwilioSettings(SecretSection):
    """`[webhooks.twilio]`: where the auth token (HMAC-SHA1 signing key) comes from."""

    _secrets: ClassVar[dict[str, tuple[str, str]]] = {
        "auth_token": ("auth_token_env", "auth_token_file")}
    auth_token_env: str | None = None
    auth_token_file: str | None = None
    auth_token: SecretStr | None = Field(default=None, exclude=True)


class VonageSettings(SecretSection):
    """`[webhooks.vonage]`: signature secret and method for the SMS API `sig` parameter."""

    _secrets: ClassVar[dict[str, tuple[str, str]]] = {
        "signature_secret": ("signature_secret_env", "signature_secret_file")}
    signature_secret_env: str | None = None
    signature_secret_file: str | None = None
    signature_method: Literal["md5hash", "md5", "sha1", "sha256", "sha512"] = "sha256"
    signature_secret: SecretStr | None = Field(default=None, exclude=True)


class GenericSourceSettings(SecretSection):
    """`[webhooks.generic.NAME]`: HMAC-SHA256 secret of one generic webhook source, and the
    format its `from`/`to` numbers come in (`number_format`: "e164" "+4930…", the default;
    "international_digits" "4930…"; "national" "030…" in `default_country`, required then).
    Short codes and alphanumeric ids are read in every format (shared/domain/numbers.py)."""

    _secrets: ClassVar[dict[str, tuple[str, str]]] = {"secret": ("secret_env", "secret_file")}
    secret_env: str | None = None
    secret_file: str | None = None
    secret: SecretStr | None = Field(default=None, exclude=True)
    number_format: Literal["e164", "international_digits", "national"] = "e164"
    default_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")

    @model_validator(mode="after")
    def _national_needs_a_country(self) -> Self:
        if self.number_format == "national" and self.default_country is None:
            raise ValueError("number_format = \"national\" needs default_country, the ISO "
                             "country its numbers belong to, e.g. default_country = \"DE\"")
        return self


class WebhooksSettings(Section):
    """`[webhooks]`: provider webhook verification and the SSRF guard for outgoing URLs."""

    public_base_url: str | None = None  # Twilio signs the public URL, which a TLS proxy changes
    replay_window_s: float = Field(default=300, gt=0)
    # Non-public networks callback and forward URLs may reach (CIDR, e.g. "10.20.0.0/16";
    # loopback only when listed). Public addresses are always allowed.
    # See shared/domain/urlguard.py.
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    twilio: TwilioSettings | None = None
    vonage: VonageSettings | None = None
    generic: dict[str, GenericSourceSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _twilio_needs_public_url(self) -> Self:
        # Twilio signs the URL it called. Built from the request's Host header instead, a
        # signature made for any other host would pass; so the public URL is required.
        base = self.public_base_url
        if base is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                    or parts.fragment or "@" in parts.netloc:
                raise ValueError("public_base_url: must be an http(s) URL with a host and no "
                                 "user, query or fragment, e.g. \"https://sms.example.com\"")
        if self.twilio is not None and self.twilio.auth_token is not None and not base:
            raise ValueError("public_base_url: required when [webhooks.twilio] is configured "
                             "(Twilio signs the public URL it calls, e.g. "
                             "public_base_url = \"https://sms.example.com\")")
        return self

    @model_validator(mode="before")
    @classmethod
    def _networks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "allow_private_urls" in data:
            raise ValueError(
                "allow_private_urls (SMSGW_WEBHOOKS__ALLOW_PRIVATE_URLS) was removed: list the "
                "non-public networks callback and forward URLs may reach in [webhooks] "
                "allowed_networks, e.g. allowed_networks = [\"10.20.0.0/16\"] (loopback only "
                "when listed, e.g. \"127.0.0.1/32\")")
        nets = data.get("allowed_networks")
        if nets is None:
            return data
        if isinstance(nets, str) or not isinstance(nets, list | tuple):
            raise ValueError("allowed_networks: must be a list of CIDR networks, e.g. "
                             "[\"10.20.0.0/16\"]")
        from smsgw.shared.domain.urlguard import parse_network  # imports aiohttp: only when used

        parsed, errors = [], []
        for i, net in enumerate(nets):
            try:
                parsed.append(parse_network(net))
            except ValueError as exc:
                errors.append(f"allowed_networks[{i}]: {exc}")
        if errors:
            raise ValueError("; ".join(errors))
        return {**data, "allowed_networks": tuple(dict.fromkeys(parsed))}


class SecuritySettings(SecretSection):
    """`[security]`: `server_secret` is the HMAC-SHA256 key API keys are stored under."""

    _secrets: ClassVar[dict[str, tuple[str, str]]] = {
        "server_secret": ("server_secret_env", "server_secret_file")}
    server_secret_env: str | None = None
    server_secret_file: str | None = None
    server_secret: SecretStr | None = Field(default=None, exclude=True)


class DaemonSection(Section):
    """Keys every daemon section (`[receiver]`, `[processor]`, `[sender]`) has.

    `metrics_port` None means the default of docs/ARCHITECTURE.md "Ports", 9100 + 10 x (instance -
    1) + n (n = 1 receiver, 2 processor, 3 sender); `load_config` fills it in, so a loaded config
    always has
    a port (0 = any free port, for tests). `poll_s` is the fallback timer of queue consumers
    (the NOTIFY listener is the main wake-up). Subclasses add their daemon's keys.
    """

    log_level: LogLevel = "info"
    drain_s: float = Field(default=20.0, gt=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    poll_s: float = Field(default=5.0, gt=0)
    # after a NOTIFY wake-up, wait this long before claiming so that one claim takes what
    # arrives meanwhile (fewer, fuller batches at moderate rates; adds up to this latency)
    claim_linger_s: float = Field(default=0.0, ge=0, le=1.0)
    # adaptive batching (group commits and NOTIFY-driven claims): while busy, a short batch
    # waits up to this long to fill; when quiet nothing waits (shared/queue/groupcommit.py)
    adaptive_linger_s: float = Field(default=0.005, ge=0, le=0.1)
    queue_stats_s: float = Field(default=0.5, gt=0)  # depth/age snapshot refresh interval
    watchdog: bool = True

    def resolve_defaults(self, daemon: str, instance: int) -> Self:
        """Fill in the instance-dependent defaults (ports); subclasses extend it."""
        if self.metrics_port is not None:
            return self
        port = METRICS_PORT_BASE + 10 * (instance - 1) + DAEMON_PORT_OFFSET.get(daemon, 0)
        return self.model_copy(update={"metrics_port": port})


# --- the loaded configuration -------------------------------------------------------------

class SharedConfig(Section):
    """The shared sections, as every daemon and admin command sees them."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    connectors: list[ConnectorSettings] = Field(default_factory=list)
    routes: list[RouteSettings] = Field(default_factory=list)
    webhooks: WebhooksSettings = Field(default_factory=WebhooksSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @model_validator(mode="after")
    def _connectors_known(self) -> Self:
        # A reload that breaks either rule is refused as a whole (the old config keeps
        # running); at start it is a config error.
        names = [c.name for c in self.connectors]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"connectors: each name at most once ({', '.join(twice)})")
        unknown = sorted({c for r in self.routes for c in r.connectors} - set(names))
        if unknown and names:
            raise ValueError(f"routes name connectors that are not configured: "
                             f"{', '.join(unknown)}")
        return self

    def redacted_dump(self) -> dict[str, Any]:
        """JSON-able dump for the `config_loaded` log: secrets excluded, URL password hidden."""
        data = self.model_dump(mode="json")
        if data["database"].get("url"):
            data["database"]["url"] = redact_url(data["database"]["url"])
        return data

    @property
    def server_secret(self) -> SecretStr | None:
        """HMAC-SHA256 key for API keys (`[security] server_secret_env/server_secret_file`)."""
        return self.security.server_secret


D = TypeVar("D", bound=DaemonSection)


class AppConfig(SharedConfig, Generic[D]):
    """One daemon's validated configuration: the shared sections plus its own (`daemon`)."""

    daemon_name: str
    instance: int = Field(ge=1)
    daemon: D


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (for logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[1]}"))


def split_url_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None): keep the password out of every
    URL that is written to a config file or a log, and pass it to the driver on its own."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}")), unquote(parts.password)


def _url_password(url: str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).password


def load_config(daemon: str, section_model: type[D], *, path: str | None,
                env: Mapping[str, str] = os.environ, instance: int | None = None,
                require_database: bool = True) -> AppConfig[D]:
    """Load and validate `daemon`'s configuration; raise `ConfigError` listing every problem.

    `path` is the `--config` file (an error if given and missing); None means `smsgw.toml` in
    the working directory when it exists. `instance` (from `--instance`) wins over
    `SMSGW_INSTANCE`; the default is 1. The other daemons' sections are ignored.
    """
    loader = _Loader(path, env)
    inst = loader.instance(instance)
    data = loader.merged(keep=daemon)
    validated = loader.validate(_file_model({daemon: section_model}), data)
    if require_database and validated is not None and not validated.database.url:
        loader.errors.append("database.url: required (set [database] url or SMSGW_DATABASE_URL)")
    loader.raise_if_errors()
    assert validated is not None and inst is not None
    section = getattr(validated, daemon).resolve_defaults(daemon, inst)
    shared = {name: getattr(validated, name) for name in SharedConfig.model_fields}
    # Parametrised at run time so pydantic keeps the daemon's own section type.
    model = AppConfig[section_model]  # type: ignore[valid-type]
    return model(daemon_name=daemon, instance=inst, daemon=section, **shared)


def peer_setting(path: str | None, section: str, key: str,
                 env: Mapping[str, str] = os.environ) -> Any:
    """One key of another daemon's section, as the file and the environment give it (None when
    unset or unreadable; not validated: the owner validates it, the caller checks the value it
    gets). For a limit one daemon enforces and others check early: the reporter's
    `max_range_days`, which the receiver's API and the CLI check at request time."""
    loader = _Loader(path, env)
    section_data = loader.merged(keep=section).get(section)
    return section_data.get(key) if isinstance(section_data, dict) else None


def load_shared(path: str | None, env: Mapping[str, str] = os.environ) -> SharedConfig:
    """Load only the shared sections (admin commands); daemon sections are ignored."""
    loader = _Loader(path, env)
    validated = loader.validate(SharedConfig, loader.merged(keep=None))
    loader.raise_if_errors()
    assert validated is not None
    return SharedConfig(**{name: getattr(validated, name) for name in SharedConfig.model_fields})


def load_all(path: str | None, env: Mapping[str, str] = os.environ, *,
             sections: Mapping[str, type[DaemonSection]]) -> dict[str, AppConfig[Any]]:
    """Validate the shared sections and every daemon's section (for `smsgw check-config`).

    `sections` maps daemon name -> its section model (services pass theirs; `shared` does not
    import `services`). Raises one `ConfigError` with every distinct problem.
    """
    loaded: dict[str, AppConfig[Any]] = {}
    errors: list[str] = []
    for daemon, model in sections.items():
        try:
            loaded[daemon] = load_config(daemon, model, path=path, env=env)
        except ConfigError as exc:
            errors += [e for e in exc.errors if e not in errors]
    if errors:
        raise ConfigError(errors)
    return loaded


def _file_model(own: Mapping[str, type[DaemonSection]]) -> type[SharedConfig]:
    fields: dict[str, Any] = {name: (model, Field(default_factory=model))
                              for name, model in own.items()}
    return create_model("ConfigFile", __base__=SharedConfig, **fields)


class _Loader:
    """Reads the file and the environment into one dict and validates it, collecting errors."""

    def __init__(self, path: str | None, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []
        self.file_label = ""
        self.file_data = self._read_file(path)
        self.env_paths: dict[tuple[str, ...], str] = {}

    def _read_file(self, path: str | None) -> dict[str, Any]:
        if path is None:
            if not Path(DEFAULT_CONFIG_FILE).is_file():
                return {}
            path = DEFAULT_CONFIG_FILE
        self.file_label = path
        try:
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError:
            self.errors.append(f"--config {path}: file not found")
        except OSError as exc:
            self.errors.append(f"--config {path}: cannot read: {exc.strerror}")
        except tomllib.TOMLDecodeError as exc:
            self.errors.append(f"{path}: invalid TOML: {exc}")
        return {}

    def instance(self, given: int | None) -> int | None:
        if given is not None:
            if given < 1:
                self.errors.append("--instance: must be a positive integer")
            return given
        raw = self.env.get(ENV_INSTANCE, "1")
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            self.errors.append(f"{ENV_INSTANCE}: must be a positive integer, got {raw!r}")
            return None
        return int(raw)

    def merged(self, keep: str | None) -> dict[str, Any]:
        """File data with env overrides applied; daemon sections other than `keep` dropped."""
        data = {k: v for k, v in self.file_data.items() if k not in DAEMONS or k == keep}
        secret_envs = set(_named_env_vars(self.file_data))
        overrides: list[tuple[tuple[str, ...], Any, str]] = []
        for name in sorted(self.env):
            if not name.startswith(ENV_PREFIX) or name in KNOWN_ENV:
                continue
            path = self._env_path(name, secret_envs, keep)
            if path is None or (path[0] in DAEMONS and path[0] != keep):
                continue
            overrides.append((path, _env_value(self.env[name]), name))
        for path, value, name in overrides:
            _set_path(data, path, value)
            self.env_paths[path] = name
        # A *_env key set through the environment names a variable too.
        for name in _named_env_vars(data):
            self.errors = [e for e in self.errors if not e.startswith(f"{name}: ")]
        return data

    def _env_path(self, name: str, secret_envs: set[str],
                  keep: str | None) -> tuple[str, ...] | None:
        if name == ENV_DATABASE_URL:
            return ("database", "url")
        parts = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__"))
        top = set(SharedConfig.model_fields) | set(DAEMONS) | ({keep} if keep else set())
        if len(parts) >= 1 and parts[0] in top and all(parts) and (
                len(parts) >= 2 or parts[0] in ("connectors", "routes")):
            return parts
        if name not in secret_envs:
            self.errors.append(
                f"{name}: unknown environment variable (expected SMSGW_<SECTION>__<KEY>, "
                f"SMSGW_DATABASE_URL or SMSGW_INSTANCE)")
        return None

    def validate(self, model: type[SharedConfig], data: dict[str, Any]) -> SharedConfig | None:
        try:
            return model.model_validate(data, context={"env": self.env})
        except ValidationError as exc:
            self.errors += [self._describe(err) for err in exc.errors()]
            return None

    def _describe(self, err: Any) -> str:
        loc = tuple(str(p) for p in err["loc"])
        where = _dotted(err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        for i in range(len(loc), 0, -1):
            if loc[:i] in self.env_paths:
                return f"{self.env_paths[loc[:i]]} ({where}): {msg}"
        suffix = f" (in {self.file_label})" if self.file_label else ""
        return f"{where}: {msg}{suffix}"

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ConfigError(list(dict.fromkeys(self.errors)))


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _env_value(raw: str) -> Any:
    # Lists and tables come as JSON; scalars stay strings and pydantic coerces them.
    if raw[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _named_env_vars(node: Any) -> Iterator[str]:
    """Every value of a `*_env` key anywhere in the data: variables the config points at."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                yield value
            else:
                yield from _named_env_vars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _named_env_vars(item)
