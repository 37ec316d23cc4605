"""Stop budget (Home Assistant's cumulative-shutdown test): drain + every close timeout +
margin stays below each daemon unit's TimeoutStopSec=, so systemd never SIGKILLs a drain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smsgw.services.processor.app import ProcessorDaemon
from smsgw.services.receiver.app import ReceiverDaemon
from smsgw.services.sender.app import SenderDaemon
from smsgw.shared.runtime import lifecycle
from smsgw.shared.runtime.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DAEMONS = [ReceiverDaemon, ProcessorDaemon, SenderDaemon]


def timeout_stop_s(unit: Path) -> float:
    match = re.search(r"^TimeoutStopSec=(\d+)(s?)\s*$", unit.read_text(), re.MULTILINE)
    assert match, f"{unit.name} has no TimeoutStopSec="
    return float(match.group(1))


@pytest.mark.parametrize("daemon", DAEMONS, ids=lambda d: d.name)
def test_stop_budget_fits_every_unit(daemon: type) -> None:
    """1. load the daemon's default config; 2. add drain_s, release, listener, pool and site
    close timeouts, the daemon's own extra and the margin; 3. the sum is below the
    TimeoutStopSec= of the plain and the template unit (the fallback: the documented 45 s)."""
    cfg = load_config(daemon.name, daemon.settings_model, path=None,
                      env={"SMSGW_DATABASE_URL": "postgresql://x/y"})
    budget = daemon.stop_budget_s(cfg.daemon)
    assert budget >= cfg.daemon.drain_s + lifecycle.POOL_CLOSE_TIMEOUT_S + lifecycle.STOP_MARGIN_S
    units = sorted((ROOT / "services" / daemon.name).glob(f"smsgw-{daemon.name}*.service"))
    limits = [timeout_stop_s(u) for u in units] or [lifecycle.DEFAULT_TIMEOUT_STOP_S]
    for limit in limits:
        assert budget < limit, f"{daemon.name}: budget {budget}s >= TimeoutStopSec={limit}"


def test_budget_grows_with_drain_and_sites() -> None:
    """The budget follows the settings: a longer drain or one more site costs exactly that."""
    base = lifecycle.stop_budget_s(10)
    assert lifecycle.stop_budget_s(25) == base + 15
    assert lifecycle.stop_budget_s(10, sites=2) == base + lifecycle.SITE_CLOSE_TIMEOUT_S
    assert lifecycle.stop_budget_s(10, extra_close_s=4) == base + 4
