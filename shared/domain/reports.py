"""Report requests: what may be asked for, checked the same way by the CLI and the HTTP API.

Kinds (docs/ARCHITECTURE.md "The reporter"): `campaign` (needs `campaign`), `traffic`
(optionally one `account`; an API caller's traffic report is always its own account's),
`inbound` and `optouts`. Campaign, inbound and opt-out data carry no account, so those kinds
are for operators only (the CLI, or an API key of an operator account). Every request has a
time range [`from`, `to`) and a time zone (IANA name, default UTC) in which days and hours are
counted; times without an offset are read in that zone.

`parse_request` turns raw fields into `ReportParams` or raises `ReportInputError` naming the
field (the API answers 422 with it, the CLI prints it). `check_names` looks the campaign and
account up in the database (unknown ones are errors too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

KINDS: Final = ("campaign", "traffic", "inbound", "optouts")
OPERATOR_KINDS: Final = frozenset({"campaign", "inbound", "optouts"})
MAX_RANGE_DAYS: Final = 400  # the longest range a request may span (also `[reporter]`)
RANGE_DAYS_CEILING: Final = 3660  # what `[reporter] max_range_days` may be set to at most


def configured_range_days(value: Any) -> int:
    """`[reporter] max_range_days` as another daemon reads it (`config.peer_setting`): the
    value when it is a whole number of days the reporter accepts, else the default (the
    reporter itself refuses to start with a bad one)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and \
            1 <= value <= RANGE_DAYS_CEILING:
        return value
    return MAX_RANGE_DAYS
DEFAULT_RANGE: Final = timedelta(days=7)
MAX_NAME_LEN: Final = 100
FILE_NAMES: Final = ("csv", "html", "entries_csv")  # what a report's `files` may hold

CAMPAIGN_KNOWN: Final = """
-- campaign_known: a campaign is known when it has an entry (campaign_entries_time_idx) or a
-- rule records entries for it
SELECT EXISTS (SELECT 1 FROM campaign_entries WHERE campaign = $1)
    OR EXISTS (SELECT 1 FROM rules
                WHERE actions @> jsonb_build_array(jsonb_build_object('campaign', $1::text)))
"""
ACCOUNT_ID: Final = """
-- account_id: an account by name
SELECT id FROM accounts WHERE name = $1
"""
STATEMENTS: Final = {"reports.campaign_known": CAMPAIGN_KNOWN, "reports.account_id": ACCOUNT_ID}


class ReportInputError(ValueError):
    """A bad request: `field` names what is wrong (the API's 422 `field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportParams:
    """A validated request; `as_json()` is what `report_requests.params` stores."""

    kind: str
    start: datetime
    end: datetime
    tz: str
    campaign: str | None = None
    account: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The stored form (times in UTC ISO 8601)."""
        out: dict[str, Any] = {"from": self.start.astimezone(UTC).isoformat(),
                               "to": self.end.astimezone(UTC).isoformat(), "tz": self.tz}
        if self.campaign is not None:
            out["campaign"] = self.campaign
        if self.account is not None:
            out["account"] = self.account
        return out

    @classmethod
    def from_json(cls, kind: str, data: dict[str, Any]) -> ReportParams:
        """Back from `as_json()` (a stored request)."""
        return cls(kind=kind, start=datetime.fromisoformat(data["from"]),
                   end=datetime.fromisoformat(data["to"]), tz=data["tz"],
                   campaign=data.get("campaign"), account=data.get("account"))

    @property
    def zone(self) -> ZoneInfo:
        """The time zone days and hours are counted in."""
        return ZoneInfo(self.tz)


def _zone(tz: Any) -> str:
    if tz is None:
        return "UTC"
    if not isinstance(tz, str) or not tz or len(tz) > 64 or ".." in tz or tz.startswith("/"):
        raise ReportInputError("tz", "must be an IANA time zone name, e.g. Europe/London")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportInputError("tz", f"unknown time zone {tz!r} (an IANA name, e.g. "
                                     "Europe/London)") from None
    return tz


def _time(field: str, raw: Any, zone: ZoneInfo) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str) and 0 < len(raw) <= 40:
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise ReportInputError(field, "must be an ISO 8601 time, e.g. 2026-05-01T00:00 or "
                                          "2026-05-01T00:00:00+01:00") from None
    else:
        raise ReportInputError(field, "must be an ISO 8601 time, e.g. 2026-05-01T00:00")
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def _name(field: str, raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_NAME_LEN \
            or not raw.isprintable():
        raise ReportInputError(field, f"must be a name of 1 to {MAX_NAME_LEN} printable "
                                      "characters")
    return raw


def parse_request(kind: Any, *, start: Any = None, end: Any = None, tz: Any = None,
                  campaign: Any = None, account: Any = None, now: datetime | None = None,
                  max_range_days: int = MAX_RANGE_DAYS) -> ReportParams:
    """Check a request's fields (not yet against the database: `check_names`)."""
    if kind not in KINDS:
        raise ReportInputError("kind", f"must be one of {', '.join(KINDS)}")
    zone_name = _zone(tz)
    zone = ZoneInfo(zone_name)
    campaign = _name("campaign", campaign)
    account = _name("account", account)
    if kind == "campaign" and campaign is None:
        raise ReportInputError("campaign", "required for a campaign report")
    if kind != "campaign" and campaign is not None:
        raise ReportInputError("campaign", f"only a campaign report takes a campaign, not "
                                           f"{kind}")
    if kind != "traffic" and account is not None:
        raise ReportInputError("account", f"only a traffic report is per account, not {kind}")
    t_end = _time("to", end, zone) or (now or datetime.now(UTC))
    t_start = _time("from", start, zone) or t_end - DEFAULT_RANGE
    if t_end <= t_start:
        raise ReportInputError("to", "must be after from")
    if t_end - t_start > timedelta(days=max_range_days):
        raise ReportInputError("to", f"the range may span at most {max_range_days} days")
    return ReportParams(kind=kind, start=t_start, end=t_end, tz=zone_name, campaign=campaign,
                        account=account)


async def check_names(conn: asyncpg.Connection | asyncpg.Pool, params: ReportParams) -> None:
    """Unknown campaign or account → `ReportInputError` naming it."""
    if params.campaign is not None and not await conn.fetchval(CAMPAIGN_KNOWN, params.campaign):
        raise ReportInputError("campaign", f"unknown campaign {params.campaign!r}")
    if params.account is not None and await conn.fetchval(ACCOUNT_ID, params.account) is None:
        raise ReportInputError("account", f"unknown account {params.account!r}")
