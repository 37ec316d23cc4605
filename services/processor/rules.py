"""Processor rules: the JSON model, its validation, and in-memory matching.

A rule is stored in the `rules` table (name, priority, enabled, match jsonb, actions jsonb) and
managed with `smsgw rules import FILE | export | list | test` (`rules_cli.py`). The file format
(JSON: a list of rules or `{"rules": [...]}`; TOML: `[[rules]]` tables) — see
`rules_example.json`:

    {
      "name": "win-promo",              unique; the import upserts by name
      "priority": 10,                    lower runs first (ties: by name); default 100
      "enabled": true,
      "default": false,                  true: considered only when no ordinary rule matched
      "match": {                         every given condition must hold (AND); lists are OR
        "to": ["80080"],                 destination short code / long number ('+' optional)
        "keyword": ["WIN", "WINN"],      first word; case- and accent-insensitive; the list
                                         holds the keyword and its aliases
        "regex": "^win\\s+(?P<answer>[abc])\\b",   Python re, searched in the whole text;
                                         named groups become template placeholders
        "from_prefix": ["+4477"],        subscriber number prefixes ('+' optional)
        "channel": ["smpp", "http"],     inbound channel
        "connector": ["smsc-a"],         SMPP connector or webhook provider
        "window": {"start": "2026-12-01T08:00", "end": "2026-12-24T20:00",
                   "tz": "Europe/London"}   campaign window: the arrival time must be in
                                         [start, end); naive times are in `tz`; either end open
      },
      "actions": [                       one or more, run in order
        {"type": "reply", "template": "Thanks {keyword}! Entry for {from}",
         "category": "transactional", "from": null, "priority": 0},
        {"type": "campaign_entry", "campaign": "win",
         "quota": {"per": "day", "max": 1, "tz": "Europe/London"},
         "over_quota_reply": "You already entered today", "data": {"prize": "a car"}},
        {"type": "forward", "url": "https://app.example/mo", "secret_env": "WIN_HOOK_SECRET",
         "batch": 1},
        {"type": "forward", "get_url": "https://app.example/mo?from=%p&text=%a"},
        {"type": "forward", "get_url": "https://app.example/ask?q=%r",
         "reply_from_body": {"max_messages": 3, "concatenation": true, "omit_empty": true,
                             "accept_x_kannel_headers": true}},   (or `true`: the defaults)
        {"type": "optout", "op": "stop", "scope": "short_code", "reply": "Unsubscribed."}
      ]
    }

Semantics:
- First matching rule wins: ordinary rules by (priority, name), then default rules the same way.
- `campaign_entry` with a quota: when the subscriber is over quota for the period ("hour",
  "day", "week", "month" in the quota's time zone — default the window's, else UTC — or
  "campaign" for the whole campaign), no entry is recorded and the rule's other reply and
  forward actions are skipped; `over_quota_reply` (if any) is sent instead.
- `forward` writes a `callbacks` row (kind 'mo'): a JSON POST signed with HMAC-SHA256 when
  `secret_env` names an environment variable (resolved at send time, `secret_ref`
  'rule:<id>:<action index>'), or a GET of the Kannel-style `get_url` template. With
  `batch` > 1, up to that many MOs waiting for the same URL are POSTed together as a JSON
  array of the same objects (header `X-Smsgw-Batch: <count>`; one signature over the array);
  the application answers 2xx for the whole request, anything else retries all of them.
- `forward` with `reply_from_body` (one request per MO, so not with `batch` > 1) is a Kannel
  sms-service: the 2xx answer's body becomes the reply MT, from the number the MO was sent
  to (or the table's `from`, Kannel's `faked-sender`) back to the MO's sender
  (`kannel_reply.py` has the steps and Kannel's functions they follow). Its keys, Kannel's
  with `_` for `-` and Kannel's defaults: `max_messages` (1; 0 = never a reply; a longer
  text is split into at most this many SMS, the rest dropped), `concatenation` (false: the
  parts go as separate SMS; true: as one concatenated MT), `omit_empty` (false: an empty
  body sends `empty_message`, "<Empty reply from service provider>"), `header`, `footer`,
  `split_chars`, `split_suffix`, `prefix` + `suffix` (what of an HTML body is kept),
  `accept_x_kannel_headers` (false: X-Kannel-From, -To, -SMSC, -Coding, -DLR-Mask, -DLR-URL,
  -Validity, -Deferred, -Priority, -UDH, -MClass, -PID … in the answer are ignored, as
  Kannel denies them), the body by its Content-Type (text/plain, text/html, 8-bit data for
  application/octet-stream, Kannel's XML reply for text/xml) and charset
  (`default_charset`, ISO-8859-1, for text without one), `unrepresentable_message` (sent for
  a body of another type or one that does not decode),
  `max_body_bytes` (65536; a larger answer fails the forward: dead at once, no reply),
  `category`, `priority`, `dlr_url` + `dlr_mask` (the sms-service's DLR settings). A
  forward retried after a timeout replies once, for the attempt that succeeded.
- `optout`: `stop` adds the subscriber to the suppression list (scope: the short code it wrote
  to, or 'global'), `start` removes it (both scopes), `help` only replies. The built-in
  keyword lists (`[processor.optout]`) run before any rule; this action lets a rule do the same
  for other words.
- Replies go from the number the subscriber wrote to (or the action's `from`) back to the
  subscriber, with the action's category ('transactional' or 'marketing': the sender refuses
  marketing MT to a suppressed number).
"""

from __future__ import annotations

import codecs
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from smsgw.services.processor import templates
from smsgw.shared.core.errors import SmsGatewayError
from smsgw.shared.domain.numbers import InvalidNumber, normalise_sender
from smsgw.shared.domain.urlguard import UnsafeUrl, check_http_url

Category = Literal["transactional", "marketing"]


class RuleError(SmsGatewayError):
    """A rule file or stored rule is invalid; `errors` lists each problem as `path: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Window(_Model):
    """Campaign window: arrival time in [start, end); naive times are in `tz`."""

    start: datetime | None = None
    end: datetime | None = None
    tz: str = "UTC"

    @field_validator("tz")
    @classmethod
    def _tz_known(cls, v: str) -> str:
        _zone(v)
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start_utc and self.end_utc and self.start_utc >= self.end_utc:
            raise ValueError("window start must be before end")
        return self

    def _aware(self, t: datetime | None) -> datetime | None:
        if t is None:
            return None
        return t.replace(tzinfo=_zone(self.tz)) if t.tzinfo is None else t

    @property
    def start_utc(self) -> datetime | None:
        """The start as an aware datetime (None: open)."""
        return self._aware(self.start)

    @property
    def end_utc(self) -> datetime | None:
        """The end as an aware datetime (None: open)."""
        return self._aware(self.end)


class Match(_Model):
    """Conditions of a rule; all given ones must hold, a list matches any of its items."""

    to: list[str] | None = None
    keyword: list[str] | None = None
    regex: str | None = None
    from_prefix: list[str] | None = None
    channel: list[Literal["smpp", "http", "cli"]] | None = None
    connector: list[str] | None = None
    window: Window | None = None

    @field_validator("to", "keyword", "from_prefix", "channel", "connector", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("to", "keyword", "from_prefix", "connector")
    @classmethod
    def _non_empty_items(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not s.strip() for s in v)):
            raise ValueError("must be a non-empty list of non-empty strings")
        return v

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return v


class ReplyAction(_Model):
    """Auto-reply from a template."""

    type: Literal["reply"]
    template: str = Field(min_length=1)
    category: Category = "transactional"
    from_: str | None = Field(default=None, alias="from")
    priority: int = Field(default=0, ge=-32768, le=32767)


class Quota(_Model):
    """At most `max` entries per subscriber per period."""

    per: Literal["hour", "day", "week", "month", "campaign"] = "day"
    max: int = Field(default=1, ge=1)
    tz: str | None = None

    @field_validator("tz")
    @classmethod
    def _tz_known(cls, v: str | None) -> str | None:
        if v is not None:
            _zone(v)
        return v


class CampaignAction(_Model):
    """Record a campaign entry, with an optional per-subscriber quota."""

    type: Literal["campaign_entry"]
    campaign: str = Field(min_length=1)
    quota: Quota | None = None
    over_quota_reply: str | None = None
    category: Category = "transactional"
    data: dict[str, str] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _data_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key.isidentifier() or key in templates.BUILTIN_FIELDS:
                raise ValueError(f"data key {key!r} must be an identifier and not a built-in "
                                 f"placeholder name")
        return v


# Kannel 1.4.5's texts for a reply it cannot take from the body (gw/smsbox.c, init_smsbox:
# `reply-emptymessage`, and the text `reply_couldnotrepresent` defaults to).
KANNEL_EMPTY_REPLY = "<Empty reply from service provider>"
KANNEL_UNREPRESENTABLE_REPLY = "Result could not be represented as an SMS message."
# header + footer + split_suffix must leave room in the smallest part (67 UCS-2 characters)
_DECORATION_MAX = 40


class ReplyFromBody(_Model):
    """Kannel sms-service reply semantics for a forward: the application's HTTP answer becomes
    the reply MT (gw/smsbox.c `url_result_thread`, `fill_message`, `send_message`; the user
    guide's sms-service group). Keys are Kannel's, with `_` for `-`; defaults are Kannel's."""

    max_messages: int = Field(default=1, ge=0, le=255)  # 0: never a reply
    concatenation: bool = False      # one concatenated MT, else up to max_messages single SMS
    omit_empty: bool = False         # an empty body sends nothing (else `empty_message`)
    empty_message: str = Field(default=KANNEL_EMPTY_REPLY, min_length=1, max_length=160)
    unrepresentable_message: str = Field(default=KANNEL_UNREPRESENTABLE_REPLY, min_length=1,
                                         max_length=160)
    accept_x_kannel_headers: bool = False
    header: str = Field(default="", max_length=_DECORATION_MAX)
    footer: str = Field(default="", max_length=_DECORATION_MAX)
    split_chars: str = Field(default="", max_length=32)
    split_suffix: str = Field(default="", max_length=_DECORATION_MAX)
    prefix: str | None = Field(default=None, min_length=1, max_length=200)  # text/html only,
    suffix: str | None = Field(default=None, min_length=1, max_length=200)  # both or neither
    # the charset of a text/* body whose Content-Type names none (RFC 2616 3.7.1, as Kannel's
    # http_header_get_content_type assumes)
    default_charset: str = Field(default="ISO-8859-1", min_length=1, max_length=40)
    max_body_bytes: int = Field(default=65_536, ge=1, le=1_048_576)
    # Kannel's faked-sender: the reply's sender instead of the number the MO was sent to
    from_: str | None = Field(default=None, alias="from", min_length=1, max_length=20)
    category: Category = "transactional"
    priority: int = Field(default=0, ge=-32768, le=32767)
    dlr_url: str | None = Field(default=None, min_length=1, max_length=2000)  # sms-service dlr-url
    dlr_mask: int | None = Field(default=None, ge=0, le=63)

    @field_validator("default_charset")
    @classmethod
    def _charset_known(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError as exc:
            raise ValueError(f"unknown charset {v!r}") from exc
        return v

    @field_validator("from_")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                return normalise_sender(v)
            except InvalidNumber as exc:
                raise ValueError(str(exc)) from exc
        return v

    @field_validator("dlr_url")
    @classmethod
    def _dlr_url(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_http_url(v)
            except UnsafeUrl as exc:
                raise ValueError(f"dlr_url refused: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ReplyFromBody:
        if (self.prefix is None) != (self.suffix is None):
            raise ValueError("give both prefix and suffix, or neither")
        if len(self.header) + len(self.footer) + len(self.split_suffix) > _DECORATION_MAX:
            raise ValueError(f"header, footer and split_suffix together must stay within "
                             f"{_DECORATION_MAX} characters (they go into every part)")
        return self


class ForwardAction(_Model):
    """Forward the MO to an application: JSON POST to `url`, or GET of a `get_url` template."""

    type: Literal["forward"]
    url: str | None = None
    get_url: str | None = None
    secret_env: str | None = None
    # JSON POST only: up to `batch` MOs queued for this URL go in one request as a JSON array
    # (header X-Smsgw-Batch: <count>), signed as one body; 1 = one request per MO.
    batch: int = Field(default=1, ge=1, le=1000)
    # the answer's body becomes the reply MT, as a Kannel sms-service's does; `true` takes
    # Kannel's defaults, a table sets its keys
    reply_from_body: ReplyFromBody | None = None

    @field_validator("reply_from_body", mode="before")
    @classmethod
    def _reply_flag(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v

    @model_validator(mode="after")
    def _one_target(self) -> ForwardAction:
        if (self.url is None) == (self.get_url is None):
            raise ValueError("give exactly one of url and get_url")
        if self.batch > 1 and self.url is None:
            raise ValueError("batch applies to a JSON `url` forward, not to `get_url`")
        if self.batch > 1 and self.reply_from_body is not None:
            raise ValueError("reply_from_body needs one request per MO (batch = 1): one body "
                             "cannot answer several messages")
        target = self.url or self.get_url or ""
        try:  # the address itself is checked at send time, against [webhooks] allowed_networks
            check_http_url(target)
        except UnsafeUrl as exc:
            raise ValueError(f"forward URL refused: {exc}") from exc
        if self.get_url is not None:
            try:
                templates.check_get_url(self.get_url)
            except templates.TemplateError as exc:  # listed with its path, as every error
                raise ValueError(str(exc)) from exc
        return self


class OptOutAction(_Model):
    """Opt-out handling from a rule: stop (suppress), start (unsuppress) or help (reply)."""

    type: Literal["optout"]
    op: Literal["stop", "start", "help"] = "stop"
    scope: Literal["short_code", "global"] = "short_code"
    reply: str | None = None


class DeliverToAccountAction(_Model):
    """Deliver the MO to an account's ESMEs (deliver_sm over its receiver/transceiver binds on
    the SMPP server; held while it has none, up to `[receiver.smpp_server]
    delivery_retention_s`). A long MO arrives reassembled, as one deliver_sm (its text in
    message_payload when longer than one SMS)."""

    type: Literal["deliver_to_account"]
    account: str = Field(min_length=1, max_length=200)


Action = Annotated[ReplyAction | CampaignAction | ForwardAction | OptOutAction
                   | DeliverToAccountAction, Field(discriminator="type")]


class Rule(_Model):
    """One rule as stored and imported (see the module docstring)."""

    name: str = Field(min_length=1, max_length=200)
    priority: int = 100
    enabled: bool = True
    default: bool = False
    match: Match = Field(default_factory=Match)
    actions: list[Action] = Field(min_length=1)

    @model_validator(mode="after")
    def _templates_known(self) -> Rule:
        # Campaign data is visible to every template of the rule (a reply can name the prize).
        groups = set(re.compile(self.match.regex).groupindex) if self.match.regex else set()
        data = {k for a in self.actions if isinstance(a, CampaignAction) for k in a.data}
        allowed = templates.BUILTIN_FIELDS | groups | data
        for i, action in enumerate(self.actions):
            for text in _action_templates(action):
                try:
                    templates.check(text, allowed)
                except templates.TemplateError as exc:
                    raise ValueError(f"actions.{i}: {exc}") from exc
        return self

    def stored(self) -> dict[str, Any]:
        """The columns of the `rules` row: match and actions as JSON-ready dicts."""
        return {
            "name": self.name, "priority": self.priority, "enabled": self.enabled,
            "match": {**self.match.model_dump(mode="json", exclude_none=True),
                      **({"default": True} if self.default else {})},
            "actions": [a.model_dump(mode="json", by_alias=True, exclude_none=True)
                        for a in self.actions],
        }

    def exported(self) -> dict[str, Any]:
        """The rule as it appears in an export file (re-importable)."""
        row = self.stored()
        match = dict(row["match"])
        match.pop("default", None)
        out = {"name": self.name, "priority": self.priority, "enabled": self.enabled}
        if self.default:
            out["default"] = True
        return {**out, "match": match, "actions": row["actions"]}


def _action_templates(action: Any) -> list[str]:
    if isinstance(action, ReplyAction):
        return [action.template]
    if isinstance(action, CampaignAction | OptOutAction):
        text = action.over_quota_reply if isinstance(action, CampaignAction) else action.reply
        return [text] if text else []
    return []


# --- parsing ------------------------------------------------------------------------------------

def _errors(exc: ValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        out.append(f"{prefix}{'.' if loc else ''}{loc}: {err['msg']}")
    return out


def parse_rules(raw: Any) -> list[Rule]:
    """Validate a decoded rule file: a list of rules, or `{"rules": [...]}`.

    Raises `RuleError` listing every problem (path: message), including duplicate names.
    """
    items = raw.get("rules") if isinstance(raw, Mapping) else raw
    if not isinstance(items, list):
        raise RuleError(["rules: expected a list of rules (or a table with a 'rules' list)"])
    rules: list[Rule] = []
    errors: list[str] = []
    for i, item in enumerate(items):
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as exc:
            name = item.get("name") if isinstance(item, Mapping) else None
            errors += _errors(exc, f"rules[{i}]{f' ({name})' if name else ''}")
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            errors.append(f"rules: duplicate name {r.name!r}")
        seen.add(r.name)
    if errors:
        raise RuleError(errors)
    return rules


def rule_from_row(row: Mapping[str, Any]) -> Rule:
    """Build a `Rule` from a `rules` row (match holds the `default` flag)."""
    match = dict(row["match"] or {})
    default = bool(match.pop("default", False))
    return Rule.model_validate({
        "name": row["name"], "priority": row["priority"], "enabled": row["enabled"],
        "default": default, "match": match, "actions": row["actions"]})


# --- matching ----------------------------------------------------------------------------------

# ASCII punctuation plus inverted marks, guillemets, curly quotes and the ellipsis.
_STRIP = string.punctuation + "\u00a1\u00bf\u00ab\u00bb\u201c\u201d\u2018\u2019\u2026"


def fold(word: str) -> str:
    """Case- and accent-insensitive form of a word ('Gagné' -> 'gagne', 'STRASSE' ~ 'straße')."""
    decomposed = unicodedata.normalize("NFKD", word)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold()


def split_keyword(text: str | None) -> tuple[str, str]:
    """The first word (punctuation around it dropped) and the rest of the text."""
    parts = (text or "").strip().split(maxsplit=1)
    if not parts:
        return "", ""
    word = parts[0].strip(_STRIP)
    return word, parts[1] if len(parts) > 1 else ""


def _bare(number: str) -> str:
    return number[1:] if number.startswith("+") else number


@dataclass(frozen=True)
class Message:
    """The fields of an inbound message that rules look at (not slotted: `keyword` is cached)."""

    id: int
    from_addr: str
    to_addr: str
    text: str
    channel: str
    connector: str | None
    at: datetime
    coding: int = 0  # Kannel's coding of the MO: 0 text, 1 8-bit data, 2 UCS-2 (get-url %c)
    raw: bytes | None = None  # 8-bit data as received (get-url escapes of a binary MO)

    @cached_property
    def keyword(self) -> tuple[str, str, str]:  # (as written, folded, rest)
        word, rest = split_keyword(self.text)
        return word, fold(word), rest


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with everything matching needs precomputed."""

    id: int
    rule: Rule
    to: frozenset[str] | None
    keywords: frozenset[str] | None
    regex: re.Pattern[str] | None
    from_prefixes: tuple[str, ...] | None
    channels: frozenset[str] | None
    connectors: frozenset[str] | None
    start: datetime | None
    end: datetime | None
    campaigns: tuple[int, ...]  # indexes of the campaign_entry actions

    @classmethod
    def build(cls, rule_id: int, rule: Rule) -> CompiledRule:
        """Precompute the match sets of `rule`."""
        m = rule.match
        w = m.window
        return cls(
            id=rule_id, rule=rule,
            to=frozenset(_bare(t) for t in m.to) if m.to else None,
            keywords=frozenset(fold(k.strip()) for k in m.keyword) if m.keyword else None,
            regex=re.compile(m.regex) if m.regex else None,
            from_prefixes=tuple(_bare(p) for p in m.from_prefix) if m.from_prefix else None,
            channels=frozenset(m.channel) if m.channel else None,
            connectors=frozenset(m.connector) if m.connector else None,
            start=w.start_utc if w else None, end=w.end_utc if w else None,
            campaigns=tuple(i for i, a in enumerate(rule.actions)
                            if isinstance(a, CampaignAction)))

    def matches(self, msg: Message) -> re.Match[str] | bool:
        """False, or True / the regex match object when every condition holds."""
        if self.channels is not None and msg.channel not in self.channels:
            return False
        if self.connectors is not None and msg.connector not in self.connectors:
            return False
        if self.from_prefixes is not None and not _bare(msg.from_addr).startswith(
                self.from_prefixes):
            return False
        if (self.start is not None and msg.at < self.start) or (
                self.end is not None and msg.at >= self.end):
            return False
        if self.keywords is not None and msg.keyword[1] not in self.keywords:
            return False
        if self.regex is not None:
            return self.regex.search(msg.text) or False
        return True


@dataclass(frozen=True, slots=True)
class Hit:
    """The rule that fired for a message, with what it extracted."""

    rule: CompiledRule
    keyword: str
    rest: str
    groups: Mapping[str, str | None]


@dataclass(slots=True)
class RuleSet:
    """The enabled rules in evaluation order, indexed by destination; immutable once built.

    `version` is the `rules_version` counter it was loaded at (the engine reloads when the
    counter moves).
    """

    rules: tuple[CompiledRule, ...]
    version: int = -1
    _by_to: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, rules: Iterable[tuple[int, Rule]], version: int = -1) -> RuleSet:
        """Compile and order the enabled rules: ordinary ones by (priority, name), then defaults."""
        compiled = [CompiledRule.build(i, r) for i, r in rules if r.enabled]
        compiled.sort(key=lambda c: (c.rule.default, c.rule.priority, c.rule.name))
        return cls(rules=tuple(compiled), version=version)

    def by_id(self, rule_id: int) -> CompiledRule | None:
        """The compiled rule with this id (None when disabled or gone)."""
        return next((r for r in self.rules if r.id == rule_id), None)

    def candidates(self, to_addr: str) -> Sequence[CompiledRule]:
        """The rules that can match a message to `to_addr`, in evaluation order (cached)."""
        key = _bare(to_addr)
        found = self._by_to.get(key)
        if found is None:
            found = tuple(r for r in self.rules if r.to is None or key in r.to)
            if len(self._by_to) < 10_000:  # bounded: destinations are few, but never trust that
                self._by_to[key] = found
        return found

    def evaluate(self, msg: Message) -> Hit | None:
        """The first rule that matches `msg` (ordinary rules first, then defaults), or None."""
        for rule in self.candidates(msg.to_addr):
            m = rule.matches(msg)
            if m is False:
                continue
            groups = m.groupdict() if isinstance(m, re.Match) else {}
            word, _, rest = msg.keyword
            return Hit(rule=rule, keyword=word.upper(), rest=rest, groups=groups)
        return None


# --- quota periods -----------------------------------------------------------------------------

def period_key(quota: Quota | None, window: Window | None, at: datetime) -> str:
    """The quota period an arrival time falls in, in the quota's zone ('campaign' = one period)."""
    if quota is None or quota.per == "campaign":
        return "campaign"
    zone = _zone(quota.tz or (window.tz if window else "UTC"))
    local = at.astimezone(zone)
    if quota.per == "hour":
        return local.strftime("%Y-%m-%dT%H")
    if quota.per == "day":
        return local.strftime("%Y-%m-%d")
    if quota.per == "week":
        iso = local.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return local.strftime("%Y-%m")


def utcnow() -> datetime:
    """The current time, aware (UTC)."""
    return datetime.now(UTC)


__all__ = [
    "Action", "CampaignAction", "CompiledRule", "ForwardAction", "Hit", "Match", "Message",
    "OptOutAction", "Quota", "ReplyAction", "ReplyFromBody", "Rule", "RuleError", "RuleSet",
    "Window", "fold", "parse_rules", "period_key", "rule_from_row", "split_keyword", "utcnow",
]
