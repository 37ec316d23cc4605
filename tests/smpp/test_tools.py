"""The simulator CLI, the benchmark and the fuzz command, run small."""

import asyncio
import json
import subprocess
import sys

import pytest

from smsgw.services.bench import smpp_bench as bench
from smsgw.services.smsc_sim import fuzz
from smsgw.services.smsc_sim.__main__ import build_parser, config_from_args
from smsgw.services.smsc_sim.__main__ import main as sim_main
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.session import Session, SessionConfig, SubmitOutcome


def test_fuzz_decoder_streams():
    """A few thousand random/mutated streams through the decoder (the CLI runs a million)."""
    stats = fuzz.run(3000, seed=42)
    assert stats.streams == 3000
    assert stats.pdus > 100 and stats.pdu_errors > 100 and stats.framing_errors > 100
    assert stats.max_buffered <= 4096 + 64


def test_fuzz_cli(capsys):
    assert fuzz.main(["-n", "500", "--seed", "3"]) == 0
    assert "OK: no crash" in capsys.readouterr().out


def test_bench_codec_only(capsys):
    assert bench.main(["--codec-only", "--runs", "1", "--codec-number", "2000"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["conditions"]["cores"] >= 1
    assert lines[1]["codec"]["encode_submit_sm_per_s"] > 0


def test_sim_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        sim_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--receipt-delay" in out and "2775" in out


def test_sim_args_map_to_config():
    args = build_parser().parse_args(
        ["--port", "0", "--receipt-delay", "0.5", "--receipt-stats", "DELIVRD=9,UNDELIV=1",
         "--id-format", "dec"])  # fmt: skip
    cfg = config_from_args(args)
    assert cfg.receipt_delay_s == 0.5 and cfg.id_format == "dec"
    assert cfg.receipt_stats == {"DELIVRD": 9.0, "UNDELIV": 1.0}


@pytest.mark.timeout(30)
async def test_sim_cli_process_serves_and_stops_on_sigterm():
    """1. `python -m smsgw.services.smsc_sim --port 0`; 2. read the listening event (JSON line);
    3. bind and submit; 4. SIGTERM → exit 0 with a stopped event."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.smsc_sim", "--port", "0", "--stats-s", "0",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    event = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
    assert event["event"] == "smsc_sim_listening" and event["level"] == "info"
    session = Session(SessionConfig("127.0.0.1", event["port"], "any", enquire_link_s=0))
    await session.open()
    result = await session.submit(P.SubmitSm(source_addr="1", destination_addr="2"))
    assert result.outcome is SubmitOutcome.OK
    assert await session.close(2.0)
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    rest = [json.loads(line) for line in (await proc.stdout.read()).decode().splitlines()]
    assert rest[-1]["event"] == "smsc_sim_stopped" and rest[-1]["submits"] == 1
