"""Layering contracts (pgqueuer-style import rules), checked on the source tree.

1. `shared` never imports `services` (the common core knows no daemon).
2. The three daemons are independent: `services.receiver`, `services.processor` and
   `services.sender` never import each other; what two of them need lives in `shared`.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("receiver", "processor", "sender")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_shared_never_imports_services() -> None:
    offenders = [f"{p.relative_to(ROOT)} imports {m}"
                 for p in (ROOT / "shared").rglob("*.py")
                 for m in _imports(p) if m == "services" or m.startswith("services.")]
    assert not offenders, offenders


def test_daemons_are_independent() -> None:
    offenders = []
    for daemon in DAEMONS:
        others = [d for d in DAEMONS if d != daemon]
        for p in (ROOT / "services" / daemon).rglob("*.py"):
            for m in _imports(p):
                if any(m == f"services.{o}" or m.startswith(f"services.{o}.") for o in others):
                    offenders.append(f"{p.relative_to(ROOT)} imports {m}")
    assert not offenders, offenders
