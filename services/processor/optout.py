"""Built-in opt-out keywords (STOP / START / HELP), checked before any rule.

`[processor.optout]` configures them per language; the language whose list matched picks the
confirmation text (falling back to 'en', then to no reply):

    [processor.optout]
    enabled = true
    scope = "short_code"        # where a plain STOP applies: the short code written to, or "global"
    stop = { en = ["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"], fr = ["ARRET", "DESABONNER"] }
    stop_all = { en = ["STOPALL"] }            # always global
    start = { en = ["START", "UNSTOP"], fr = ["REPRENDRE"] }
    help = { en = ["HELP", "INFO"], fr = ["AIDE"] }
    stop_reply = { en = "You are unsubscribed from {to}. Reply START to resubscribe." }
    start_reply = { en = "You are subscribed again to {to}. Reply STOP to unsubscribe." }
    help_reply = { en = "{to}: reply STOP to unsubscribe. Msg&data rates may apply." }

Keywords are compared like rule keywords (first word, case- and accent-insensitive). START
removes both the short-code and the global entry (the subscriber asked to receive messages
again). Confirmations are transactional (they must reach a number that just opted out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from smsgw.services.processor import templates
from smsgw.services.processor.rules import fold

OptOp = Literal["stop", "stop_all", "start", "help"]
OPTOUT_FIELDS = frozenset({"from", "to", "keyword", "rest", "text"})


def _default_stop() -> dict[str, list[str]]:
    return {"en": ["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]}


class OptOutSettings(BaseModel):
    """`[processor.optout]`: keyword lists per language and the confirmation texts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    scope: Literal["short_code", "global"] = "short_code"
    stop: dict[str, list[str]] = Field(default_factory=_default_stop)
    stop_all: dict[str, list[str]] = Field(default_factory=lambda: {"en": ["STOPALL"]})
    start: dict[str, list[str]] = Field(default_factory=lambda: {"en": ["START", "UNSTOP"]})
    help: dict[str, list[str]] = Field(default_factory=lambda: {"en": ["HELP"]})
    stop_reply: dict[str, str] = Field(default_factory=lambda: {
        "en": "You are unsubscribed from {to} and will receive no more messages. "
              "Reply START to resubscribe."})
    stop_all_reply: dict[str, str] = Field(default_factory=lambda: {
        "en": "You are unsubscribed from all our messages. Reply START to resubscribe."})
    start_reply: dict[str, str] = Field(default_factory=lambda: {
        "en": "You are subscribed again to {to}. Reply STOP to unsubscribe."})
    help_reply: dict[str, str] = Field(default_factory=lambda: {
        "en": "{to}: reply STOP to unsubscribe, START to resubscribe."})

    @field_validator("stop_reply", "stop_all_reply", "start_reply", "help_reply")
    @classmethod
    def _templates_ok(cls, v: dict[str, str]) -> dict[str, str]:
        for lang, text in v.items():
            try:
                templates.check(text, OPTOUT_FIELDS)
            except templates.TemplateError as exc:
                raise ValueError(f"{lang}: {exc}") from exc
        return v


@dataclass(frozen=True, slots=True)
class OptOutHit:
    """A message that is an opt-out command: which one, in which language, and the reply."""

    op: OptOp
    lang: str
    reply_template: str | None


@dataclass(frozen=True, slots=True)
class OptOutKeywords:
    """The keyword lists folded into one lookup table: folded word -> (op, language)."""

    table: dict[str, tuple[OptOp, str]]
    settings: OptOutSettings

    @classmethod
    def build(cls, settings: OptOutSettings) -> OptOutKeywords:
        """Fold every configured keyword; later lists win on a clash (help < start < stop)."""
        table: dict[str, tuple[OptOp, str]] = {}
        lists: tuple[tuple[OptOp, dict[str, list[str]]], ...] = (
            ("help", settings.help), ("start", settings.start), ("stop", settings.stop),
            ("stop_all", settings.stop_all))
        for op, by_lang in lists:
            for lang, words in by_lang.items():
                for word in words:
                    table[fold(word.strip())] = (op, lang)
        return cls(table=table, settings=settings)

    def classify(self, folded_keyword: str) -> OptOutHit | None:
        """The opt-out command a (folded) first word stands for, or None."""
        if not self.settings.enabled or not folded_keyword:
            return None
        found = self.table.get(folded_keyword)
        if found is None:
            return None
        op, lang = found
        replies = getattr(self.settings, f"{op}_reply")
        text = replies.get(lang, replies.get("en"))
        return OptOutHit(op=op, lang=lang, reply_template=text or None)

    def stop_scope(self, op: OptOp, short_code: str) -> str:
        """The suppression scope a STOP-type command writes."""
        if op == "stop_all" or self.settings.scope == "global":
            return "global"
        return short_code
