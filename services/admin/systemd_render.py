"""Render the systemd units shipped next to each daemon with this installation's real paths.

The unit files in the repository are complete, valid units written for the default layout:

    /opt/smsgw/venv                 the virtualenv `smsgw` is installed into
    /etc/smsgw/smsgw.toml           the config file
    /etc/smsgw/credentials/         one file per secret, loaded with LoadCredential=
    user smsgw                      the unprivileged user the daemons run as

`python -m smsgw.services.admin.systemd_render --out DIR` writes them to DIR with those four
replaced; copy DIR's files into /etc/systemd/system and `systemctl daemon-reload`. The tests
render them with this checkout's paths and run `systemd-analyze verify` on the result.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VENV = "/opt/smsgw/venv"
DEFAULT_CONFIG = "/etc/smsgw/smsgw.toml"
DEFAULT_CREDENTIALS = "/etc/smsgw/credentials"
DEFAULT_DOCS = "/opt/smsgw/README.md"
DEFAULT_USER = "smsgw"

_SERVICES_DIR = Path(__file__).resolve().parent.parent
# Where each unit lives in the source tree: next to its daemon (docs/ARCHITECTURE.md "Daemons and
# what each owns"), shared ones here.
UNIT_DIRS = ("receiver", "processor", "sender", "reporter", "smsc_sim", "admin/systemd")


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths and user of one installation."""

    venv: str = DEFAULT_VENV
    config: str = DEFAULT_CONFIG
    credentials: str = DEFAULT_CREDENTIALS
    docs: str = DEFAULT_DOCS
    user: str = DEFAULT_USER


def unit_files() -> list[Path]:
    """Every unit file shipped in the package: daemons, templates, simulator, target."""
    found: list[Path] = []
    for sub in UNIT_DIRS:
        folder = _SERVICES_DIR / sub
        found += sorted(folder.glob("smsgw*.service")) + sorted(folder.glob("smsgw*.target"))
    return found


def render(text: str, layout: Layout) -> str:
    """Replace the default paths and user in one unit's text with `layout`'s."""
    # Longest first: the credentials folder and the config share the /etc/smsgw prefix.
    pairs = [
        (DEFAULT_CREDENTIALS, layout.credentials),
        (DEFAULT_CONFIG, layout.config),
        (DEFAULT_VENV, layout.venv),
        (DEFAULT_DOCS, layout.docs),
    ]
    for old, new in pairs:
        text = text.replace(old, new)
    lines = []
    for line in text.splitlines():
        if line in (f"User={DEFAULT_USER}", f"Group={DEFAULT_USER}"):
            line = line.split("=", 1)[0] + "=" + layout.user
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_all(out_dir: Path, layout: Layout) -> list[Path]:
    """Write every rendered unit into `out_dir`; return the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in unit_files():
        dst = out_dir / src.name
        dst.write_text(render(src.read_text(), layout))
        written.append(dst)
    return written


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m smsgw.services.admin.systemd_render",
        description="Write smsgw's systemd units with this installation's paths.")
    p.add_argument("--out", required=True, type=Path, help="folder to write the units into")
    p.add_argument("--venv", default=sys.prefix,
                   help="virtualenv holding bin/smsgw (default: the running one, %(default)s)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config file (%(default)s)")
    p.add_argument("--credentials", default=DEFAULT_CREDENTIALS,
                   help="folder with one file per secret for LoadCredential= (%(default)s)")
    p.add_argument("--docs", default=DEFAULT_DOCS, help="README path for Documentation=")
    p.add_argument("--user", default=DEFAULT_USER, help="user and group to run as (%(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Render the units; print the paths written."""
    args = _parser().parse_args(argv)
    layout = Layout(venv=os.path.abspath(args.venv), config=os.path.abspath(args.config),
                    credentials=os.path.abspath(args.credentials),
                    docs=os.path.abspath(args.docs), user=args.user)
    for path in render_all(args.out, layout):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
