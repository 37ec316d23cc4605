"""Shutdown budget (docs/ARCHITECTURE.md "The daemon contract", after Home Assistant's
`test_cumulative_shutdown_timeout_less_than_supervisor`): for each daemon, the default drain
deadline plus every close timeout after it plus a margin must fit in the unit's
`TimeoutStopSec=`, or systemd SIGKILLs a daemon that is still releasing leases or unbinding.
Read from the unit files and the settings defaults, so changing either re-checks it.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from smsgw.services.admin import up
from smsgw.services.processor.settings import ProcessorSettings
from smsgw.services.receiver.settings import ReceiverSettings
from smsgw.services.reporter.settings import ReporterSettings
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.runtime import lifecycle

REPO = Path(__file__).resolve().parents[2]
# shared/smpp/bindslots.py `_close_session` bounds one SMPP session's drain + unbind at 8 s; the
# BindManager closes its sessions in parallel, so a daemon with binds adds it once.
SMPP_SESSION_CLOSE_S = 8.0
# (settings model, HTTP sites it closes, whether it holds SMPP binds)
DAEMONS = {
    "receiver": (ReceiverSettings, 2, True),   # health site + API site; rx binds
    "processor": (ProcessorSettings, 1, False),
    "sender": (SenderSettings, 1, True),       # tx/trx binds
    "reporter": (ReporterSettings, 1, False),
}


def timeout_stop_s(unit: Path) -> float:
    """TimeoutStopSec= of a unit file, in seconds (plain seconds, as our units write it)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(unit)
    return float(cp["Service"]["TimeoutStopSec"])


def budget_s(daemon: str) -> float:
    """Worst case from SIGTERM to exit with the default settings."""
    model, sites, binds = DAEMONS[daemon]
    drain_s = model().drain_s
    extra = SMPP_SESSION_CLOSE_S if binds else 0.0
    return lifecycle.stop_budget_s(drain_s, extra_close_s=extra, sites=sites)


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize("template", [False, True], ids=["plain", "template"])
def test_stop_budget_fits_timeout_stop_sec(daemon: str, template: bool) -> None:
    """1. Add drain_s (settings default) + release + listener + pool + each HTTP site + SMPP
       unbind + margin.
    2. Read TimeoutStopSec= from the shipped unit.
    3. The budget must be strictly below it.
    """
    unit = REPO / "services" / daemon / f"smsgw-{daemon}{'@' if template else ''}.service"
    budget = budget_s(daemon)
    assert budget < timeout_stop_s(unit), (daemon, budget, timeout_stop_s(unit))


def test_up_waits_as_long_as_systemd_would() -> None:
    """`smsgw up` gives each stop stage at least the largest daemon budget before SIGKILL."""
    assert max(budget_s(d) for d in DAEMONS) <= up.STOP_TIMEOUT_S


def test_sender_lease_outlasts_drain_and_response_timeout() -> None:
    """docs/ARCHITECTURE.md, guarantee 3: a sender's lease outlasts its response timeout plus
    drain."""
    from smsgw.shared.smpp.connector import ConnectorSettings

    s = SenderSettings()
    response_timeout = ConnectorSettings.model_fields["response_timeout_s"].default
    assert s.lease_s > s.drain_s + response_timeout
