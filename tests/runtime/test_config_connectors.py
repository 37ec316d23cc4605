"""What a reload of `[[connectors]]` and `[[routes]]` must refuse whole (issue 19): a connector
name twice, a route naming a connector that is not configured, an unknown `when_stopped`."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.config import load_shared

CONNECTOR = '[[connectors]]\nname = "{name}"\nsystem_id = "x"\n'


def _errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "smsgw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_shared(str(path), {})
    return "\n".join(exc.value.errors)


def test_connector_and_route_mistakes_are_config_errors(tmp_path: Path) -> None:
    """Each mistake is named; a correct file with `when_stopped = "wait"` loads."""
    twice = CONNECTOR.format(name="a") * 2
    assert "each name at most once (a)" in _errors(tmp_path, twice)
    unknown = CONNECTOR.format(name="a") + '[[routes]]\nconnectors = ["a", "gone"]\n'
    assert "not configured: gone" in _errors(tmp_path, unknown)
    bad = CONNECTOR.format(name="a") + '[[routes]]\nconnectors = ["a"]\nwhen_stopped = "x"\n'
    assert "when_stopped" in _errors(tmp_path, bad)
    good = tmp_path / "good.toml"
    good.write_text(CONNECTOR.format(name="a") + CONNECTOR.format(name="b")
                    + '[[routes]]\nconnectors = ["a", "b"]\nwhen_stopped = "wait"\n')
    assert load_shared(str(good), {}).routes[0].when_stopped == "wait"
