"""Reliability tests: the `chaos` cases run by default; `slow` ones only with `-m slow`.

pyproject's `slow` marker says "skipped unless selected with -m slow", but nothing enforces it
for the whole suite yet; this hook does it for this directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `slow` tests of this directory unless the -m expression names `slow`."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow`")
    for item in items:
        if HERE in Path(str(item.fspath)).parents and item.get_closest_marker("slow"):
            item.add_marker(skip)
