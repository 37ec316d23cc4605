"""Rule model and matching, in memory: keyword, alias, accents, regex, window, priority."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smsgw.services.processor import templates
from smsgw.services.processor.rules import (
    Message,
    RuleError,
    RuleSet,
    parse_rules,
    period_key,
    rule_from_row,
)

AT = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


def ruleset(*rules: dict) -> RuleSet:
    return RuleSet.build(enumerate(parse_rules(list(rules)), start=1))


def msg(text: str, *, to: str = "80080", sender: str = "+447700900001", at: datetime = AT,
        channel: str = "smpp", connector: str | None = "smsc-a") -> Message:
    return Message(id=1, from_addr=sender, to_addr=to, text=text, channel=channel,
                   connector=connector, at=at)


def reply(text: str = "ok") -> list[dict]:
    return [{"type": "reply", "template": text}]


def fired(rs: RuleSet, m: Message) -> str | None:
    hit = rs.evaluate(m)
    return hit.rule.rule.name if hit else None


def test_keyword_case_accent_alias_and_punctuation() -> None:
    rs = ruleset({"name": "win", "match": {"to": ["80080"], "keyword": ["WIN", "Gagné"]},
                  "actions": reply()})
    assert fired(rs, msg("win")) == "win"
    assert fired(rs, msg("  Win! please enter me")) == "win"
    assert fired(rs, msg("GAGNE")) == "win"          # alias, accent-insensitive
    assert fired(rs, msg("gagné")) == "win"
    assert fired(rs, msg("winner")) is None           # first word only, whole word
    assert fired(rs, msg("I want to WIN")) is None
    assert fired(rs, msg("win", to="80081")) is None  # other short code
    hit = rs.evaluate(msg("win a car now"))
    assert hit is not None and hit.keyword == "WIN" and hit.rest == "a car now"


def test_regex_groups_become_placeholders() -> None:
    rs = ruleset({"name": "quiz", "match": {"regex": r"(?i)^quiz\s+(?P<answer>[abc])\b"},
                  "actions": reply("You answered {answer}")})
    hit = rs.evaluate(msg("QUIZ b"))
    assert hit is not None and hit.groups == {"answer": "b"}
    assert fired(rs, msg("quiz d")) is None


def test_window_in_time_zone() -> None:
    # 10:00-18:00 London on 10 Dec (UTC+0 in winter), 10:00-18:00 in Tokyo (UTC+9).
    rs = ruleset(
        {"name": "london", "match": {"keyword": "A", "window": {
            "start": "2026-12-10T10:00", "end": "2026-12-10T18:00", "tz": "Europe/London"}},
         "actions": reply()},
        {"name": "tokyo", "match": {"keyword": "B", "window": {
            "start": "2026-12-10T10:00", "end": "2026-12-10T18:00", "tz": "Asia/Tokyo"}},
         "actions": reply()})
    assert fired(rs, msg("a", at=AT)) == "london"                      # 12:00 UTC
    assert fired(rs, msg("a", at=AT.replace(hour=18))) is None         # end is exclusive
    assert fired(rs, msg("b", at=AT)) is None                          # 21:00 in Tokyo
    assert fired(rs, msg("b", at=AT.replace(hour=1))) == "tokyo"       # 10:00 in Tokyo


def test_priority_then_default() -> None:
    rs = ruleset(
        {"name": "catch-all", "default": True, "actions": reply()},
        {"name": "generic", "priority": 50, "match": {"to": "80080"}, "actions": reply()},
        {"name": "specific", "priority": 10, "match": {"keyword": "WIN"}, "actions": reply()})
    assert fired(rs, msg("win")) == "specific"
    assert fired(rs, msg("hello")) == "generic"
    assert fired(rs, msg("hello", to="99999")) == "catch-all"


def test_source_prefix_channel_connector() -> None:
    rs = ruleset({"name": "uk-smpp", "match": {"from_prefix": ["44"], "channel": "smpp",
                                                "connector": ["smsc-a"]}, "actions": reply()})
    assert fired(rs, msg("x", sender="+447700900001")) == "uk-smpp"
    assert fired(rs, msg("x", sender="+33612345678")) is None
    assert fired(rs, msg("x", channel="http")) is None
    assert fired(rs, msg("x", connector="smsc-b")) is None


def test_disabled_rule_never_fires() -> None:
    rs = ruleset({"name": "off", "enabled": False, "actions": reply()})
    assert fired(rs, msg("anything")) is None


def test_validation_lists_every_problem() -> None:
    with pytest.raises(RuleError) as err:
        parse_rules([
            {"name": "a", "actions": [{"type": "reply", "template": "Hi {nam}"}]},
            {"name": "b", "match": {"regex": "("}, "actions": reply()},
            {"name": "c", "match": {"window": {"tz": "Mars/Olympus"}}, "actions": reply()},
            {"name": "d", "actions": [{"type": "forward", "url": "ftp://x"}]},
            {"name": "e", "actions": []},
            {"name": "a", "actions": reply(), "bogus": 1},
        ])
    text = "\n".join(err.value.errors)
    for needle in ("{nam}", "regular expression", "Mars/Olympus", "http://", "at least 1",
                   "bogus"):
        assert needle in text, needle


def test_stored_form_round_trips() -> None:
    [rule] = parse_rules([{"name": "r", "default": True, "match": {"to": "1"},
                           "actions": [{"type": "reply", "template": "x", "from": "INFO"}]}])
    again = rule_from_row({**rule.stored(), "id": 1})
    assert again == rule and again.default and again.actions[0].from_ == "INFO"


def test_quota_period_keys_use_the_zone() -> None:
    [rule] = parse_rules([{"name": "r", "match": {"window": {"tz": "America/New_York"}},
                           "actions": [{"type": "campaign_entry", "campaign": "c",
                                        "quota": {"per": "day", "max": 1}}]}])
    quota = rule.actions[0].quota
    late = datetime(2026, 12, 11, 3, 0, tzinfo=UTC)  # still 10 Dec in New York
    assert period_key(quota, rule.match.window, late) == "2026-12-10"
    assert period_key(None, None, late) == "campaign"


def test_templates_refuse_attribute_access() -> None:
    with pytest.raises(templates.TemplateError):
        templates.check("{from.__class__}", templates.BUILTIN_FIELDS)
    assert templates.render("{{x}} {from}", {"from": "+44"}) == "{x} +44"
    url = templates.render_get_url("http://a/?t=%a&p=%p&k=%k", sender="+44 1", receiver="8",
                                   text="win  big", at=AT, smsc="s", message_id=7, service="r")
    assert url == "http://a/?t=win+big&p=%2B44+1&k=win"  # Kannel's octstr_url_encode


def test_toml_rule_file(tmp_path) -> None:
    """Rule files may be TOML ([[rules]] tables) as well as JSON."""
    from smsgw.services.processor.rules_cli import read_rule_file
    path = tmp_path / "rules.toml"
    path.write_text('''
[[rules]]
name = "win"
priority = 5
match = { to = ["80080"], keyword = ["WIN"] }
actions = [{ type = "reply", template = "Thanks {from}" }]
''')
    [rule] = read_rule_file(str(path))
    assert rule.name == "win" and rule.priority == 5 and rule.match.keyword == ["WIN"]


def test_reply_from_body_flag_table_and_validation() -> None:
    """`reply_from_body`: true takes Kannel's defaults (max-messages 1, no concatenation,
    omit-empty off, X-Kannel headers refused, ISO-8859-1 for text without a charset), a table
    sets keys, false is no reply; every bad key is named with its path."""
    def forward(**kw: object) -> dict:
        return {"name": "svc", "actions": [{"type": "forward",
                                            "get_url": "https://app.example/mo?t=%a", **kw}]}

    [on] = parse_rules([forward(reply_from_body=True)])
    options = on.actions[0].reply_from_body
    assert options is not None
    assert (options.max_messages, options.concatenation, options.omit_empty,
            options.accept_x_kannel_headers, options.default_charset) == (
        1, False, False, False, "ISO-8859-1")
    assert options.empty_message == "<Empty reply from service provider>"
    [off] = parse_rules([forward(reply_from_body=False)])
    assert off.actions[0].reply_from_body is None
    [table] = parse_rules([forward(reply_from_body={"max_messages": 3, "from": "+4930901820",
                                                    "omit_empty": True})])
    assert rule_from_row({**table.stored(), "id": 1}).stored() == table.stored()  # round trip
    with pytest.raises(RuleError) as err:
        parse_rules([
            {"name": "batched", "actions": [{"type": "forward", "url": "https://a.example/x",
                                             "batch": 5, "reply_from_body": True}]},
            forward(reply_from_body={"max_messages": -1, "default_charset": "klingon",
                                     "from": "not a+number!", "unknown": 1}),
            {**forward(reply_from_body={"header": "h" * 30, "footer": "f" * 11}),
             "name": "decorated"},
            {**forward(reply_from_body={"prefix": "<b>"}), "name": "cut"},
            {**forward(reply_from_body={"max_body_bytes": 2_000_000}), "name": "big"},
        ])
    text = "\n".join(err.value.errors)
    assert "rules[0] (batched).actions.0.forward: Value error, reply_from_body needs one " \
           "request per MO" in text
    for path in ("max_messages", "default_charset", "from", "unknown"):
        assert f"rules[1] (svc).actions.0.forward.reply_from_body.{path}" in text
    assert "rules[2] (decorated)" in text and "within 40 characters" in text
    assert "rules[3] (cut)" in text and "both prefix and suffix" in text
    assert "rules[4] (big).actions.0.forward.reply_from_body.max_body_bytes" in text


def test_get_url_escapes_are_kannels() -> None:
    """A get_url takes every escape Kannel's urltrans_fill_escape_codes fills (and %#g#k#),
    the same set the renderer fills; an unknown escape or a lone '%' is refused at import."""
    from smsgw.shared.domain import kannel

    assert set(templates.GET_URL_ESCAPES) - {"#"} == set(kannel._ESCAPES)
    every = "&".join(f"e{c}=%{c}" for c in templates.GET_URL_ESCAPES if c not in "%#")
    parse_rules([{"name": "all", "actions": [{"type": "forward", "get_url":
                  f"https://app.example/mo?{every}&m=%#smpp#tag#&pct=%%"}]}])
    for bad in ("https://app.example/mo?x=%z", "https://app.example/mo?x=%"):
        with pytest.raises(RuleError, match="get-url"):
            parse_rules([{"name": "bad", "actions": [{"type": "forward", "get_url": bad}]}])
