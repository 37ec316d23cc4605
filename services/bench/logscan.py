"""Find secrets in the files a run wrote: raw, and in the encodings a log line would carry them.

A secret that reaches a log line is rarely printed as itself only: a traceback with locals shows
`b'…'` reprs, an HTTP library logs a header as base64 (`Basic …`) or a URL-encoded query, a
digest routine logs hex. `encodings(secret)` lists every form looked for; `scan(paths, secrets)`
reads each file as bytes and reports every hit as `file:line` with the secret's name and the
encoding (never the secret itself), so a report can be printed and kept safely.

Encodings of a secret `s` (bytes `b` = its UTF-8):
raw; hex (lower and upper case); base64 standard and URL-safe, with and without padding, and the
stable middle of its base64 when it sits at offset 1 or 2 of a longer blob (a password inside
`Basic base64(user:password)`); URL-encoded (`quote`, `quote_plus`, lower-case escapes); the
escaped body of its bytes repr (`b'…'`, non-ASCII as `\\xNN`); its JSON string escape; UTF-16
(LE/BE, as a Windows or Java side may log it).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

MIN_FRAGMENT = 12  # shortest encoded form looked for (shorter ones match by chance)


@dataclass(frozen=True, slots=True)
class Hit:
    """One occurrence of a secret in a file."""

    path: Path
    line: int
    secret: str  # the secret's name, not its value
    encoding: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: secret {self.secret!r} ({self.encoding})"


def _b64_shifted(b: bytes, shift: int, altchars: bytes | None) -> bytes:
    """The part of base64(prefix + b) that depends on `b` only, for a prefix of `shift` bytes:
    what a secret looks like inside a longer base64 blob at that alignment."""
    enc = base64.b64encode(b"\0" * shift + b, altchars=altchars)
    start = (shift * 8 + 5) // 6  # first base64 character with no prefix bits in it
    end = ((shift + len(b)) * 8) // 6  # last full character made of secret bits only
    return enc[start:end]


def encodings(secret: str | bytes) -> dict[str, bytes]:
    """Every encoded form of `secret` the scanner looks for, by encoding name (deduplicated;
    forms shorter than `MIN_FRAGMENT` bytes are dropped unless the secret itself is that short)."""
    b = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else bytes(secret)
    s = b.decode("utf-8", "replace")
    forms: dict[str, bytes] = {"raw": b}
    forms["hex"] = b.hex().encode()
    forms["HEX"] = b.hex().upper().encode()
    std, url = base64.b64encode(b), base64.urlsafe_b64encode(b)
    forms["base64"] = std
    forms["base64 unpadded"] = std.rstrip(b"=")
    forms["base64url"] = url
    forms["base64url unpadded"] = url.rstrip(b"=")
    # unpadded, the last character of an unaligned length also carries following bits: drop it
    forms["base64 in a blob"] = std.rstrip(b"=")[:(len(b) * 8) // 6]
    forms["base64url in a blob"] = url.rstrip(b"=")[:(len(b) * 8) // 6]
    for shift in (1, 2):
        forms[f"base64 in a blob +{shift}"] = _b64_shifted(b, shift, None)
        forms[f"base64url in a blob +{shift}"] = _b64_shifted(b, shift, b"-_")
    forms["url-encoded"] = quote(s, safe="").encode()
    forms["url-encoded (lower)"] = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(),
                                          quote(s, safe="")).encode()
    forms["form-encoded"] = quote_plus(s, safe="").encode()
    forms["url-encoded (path)"] = quote(s).encode()
    forms["bytes repr"] = repr(b)[2:-1].encode()
    forms["json"] = json.dumps(s, ensure_ascii=False)[1:-1].encode()
    forms["json ascii"] = json.dumps(s, ensure_ascii=True)[1:-1].encode()
    forms["utf-16le"] = s.encode("utf-16-le")
    forms["utf-16be"] = s.encode("utf-16-be")
    out: dict[str, bytes] = {}
    seen: set[bytes] = set()
    for name, form in forms.items():
        if not form or form in seen or (len(form) < MIN_FRAGMENT and form != b):
            continue
        seen.add(form)
        out[name] = form
    return out


def _patterns(secrets: Mapping[str, str | bytes]) -> list[tuple[str, str, re.Pattern[bytes]]]:
    pats = []
    for name, value in secrets.items():
        if not value:
            continue
        for enc, form in encodings(value).items():
            flags = re.IGNORECASE if enc in ("hex", "HEX") else 0
            pats.append((name, enc, re.compile(re.escape(form), flags)))
    return pats


def scan(paths: Iterable[Path], secrets: Mapping[str, str | bytes]) -> list[Hit]:
    """Every hit of every secret (by name → value) in every file of `paths`, in file order."""
    pats = _patterns(secrets)
    hits: list[Hit] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        found: set[tuple[int, str]] = set()
        for name, enc, pat in pats:
            for m in pat.finditer(data):
                line = data.count(b"\n", 0, m.start()) + 1
                if (line, name) in found:
                    continue  # one hit per secret and line (its other encodings overlap)
                found.add((line, name))
                hits.append(Hit(Path(path), line, name, enc))
    hits.sort(key=lambda h: (str(h.path), h.line))
    return hits


# Postgres cluster internals: binary data, not logs (its log files are still scanned).
_PG_DATA_DIRS = frozenset({"base", "global", "pg_wal", "pg_xact", "pg_multixact", "pg_subtrans",
                           "pg_commit_ts", "pg_serial", "pg_snapshots", "pg_stat",
                           "pg_stat_tmp", "pg_twophase", "pg_notify", "pg_replslot",
                           "pg_logical", "pg_dynshmem", "pg_tblspc"})


def run_files(root: Path, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every regular file under `root` a run wrote that can carry a log line: daemon logs, the
    Postgres server log, reports, the generated config — all but the files named in `exclude`
    (the secret files themselves) and the Postgres cluster's binary data directories."""
    skip = {Path(p).resolve() for p in exclude}
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if (here / "PG_VERSION").exists():  # a cluster's data folder: only its logs
            dirnames[:] = [d for d in dirnames if d not in _PG_DATA_DIRS]
        for name in filenames:
            path = here / name
            if path.is_symlink() or not path.is_file() or path.resolve() in skip:
                continue
            if (here / "PG_VERSION").exists() and not _pg_log_like(name):
                continue
            out.append(path)
    return sorted(out)


def _pg_log_like(name: str) -> bool:
    return name.endswith((".log", ".csv", ".json")) or "log" in name
