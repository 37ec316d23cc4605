"""Quiet hours (`services/sender/policy.py` `quiet_delay_s`), edge by edge, expected values worked
out by hand from the local clock: the window's start is inside, its end is not; a window that
does not cross midnight; the recipient's zone from its number. The mutation run
(tests/mutation/sender_policy.toml) found all of these untested."""

from __future__ import annotations

from datetime import UTC, datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

import pytest

from smsgw.services.sender.policy import quiet_delay_s, recipient_zone

NY = ZoneInfo("America/New_York")
OVERNIGHT = (dtime(21, 0), dtime(8, 0))
EARLY = (dtime(1, 0), dtime(6, 0))


def at(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """A June 2026 New York wall-clock time as the UTC instant the sender has (no DST change
    in June)."""
    return datetime(2026, 6, day, hh, mm, ss, tzinfo=NY).astimezone(UTC)


@pytest.mark.parametrize(("now", "quiet", "expected_s"), [
    (at(1, 20, 59, 59), OVERNIGHT, 0.0),          # one second before the start
    (at(1, 21), OVERNIGHT, 11 * 3600.0),          # the start is quiet: until 08:00 tomorrow
    (at(1, 23, 30), OVERNIGHT, 8.5 * 3600),
    (at(2, 0), OVERNIGHT, 8 * 3600.0),            # midnight, the next day's date
    (at(2, 7, 59), OVERNIGHT, 60.0),
    (at(2, 8), OVERNIGHT, 0.0),                   # the end is not quiet
    (at(2, 12), OVERNIGHT, 0.0),
    (at(1, 0, 59), EARLY, 0.0),                   # a window within one day
    (at(1, 1), EARLY, 5 * 3600.0),
    (at(1, 5, 30), EARLY, 1800.0),
    (at(1, 6), EARLY, 0.0),
    (at(1, 23), EARLY, 0.0),
])
def test_quiet_delay_edges(now: datetime, quiet: tuple[dtime, dtime], expected_s: float) -> None:
    assert quiet_delay_s(now, NY, quiet) == expected_s


def test_recipient_zone_from_the_number() -> None:
    """The zone of the number's region (libphonenumber's own table), else the default."""
    assert recipient_zone("+12125551234") == ZoneInfo("America/New_York")
    assert recipient_zone("+33612345678") == ZoneInfo("Europe/Paris")
    assert recipient_zone("+81312345678") == ZoneInfo("Asia/Tokyo")
    assert recipient_zone("+999", default="Europe/Berlin") == ZoneInfo("Europe/Berlin")


def test_quiet_hours_end_at_0800_on_the_night_clocks_go_forward() -> None:
    """2026-03-08, New York: 02:00 EST becomes 03:00 EDT. From 23:00 EST on the 7th to 08:00
    EDT on the 8th is 8 hours of real time, not the 9 the wall clocks suggest."""
    now = datetime(2026, 3, 7, 23, 0, tzinfo=NY).astimezone(UTC)
    assert quiet_delay_s(now, NY, OVERNIGHT) == 8 * 3600.0
