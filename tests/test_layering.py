"""Layering contracts, checked by import-linter over the import graph of the installed tree.

The contracts live in `pyproject.toml` (`[tool.importlinter]`; docs/ARCHITECTURE.md "Layers
and packages"): `shared` never imports `services`; inside `shared` the layers are runtime >
domain > queue | smpp > core; the daemons and the simulator never import each other, nor admin
or benchmark code. A second test proves the graph is real (so the contracts cannot pass on an
empty or misnamed package), and the package list in `pyproject.toml` names every package
folder (so a new folder cannot be left out of the installed `smsgw`).
"""

import tomllib
from pathlib import Path

import grimp
from importlinter import cli

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                            no_logo=True) == 0


def test_the_graph_the_contracts_read_is_the_real_one() -> None:
    graph = grimp.build_graph("smsgw.shared", "smsgw.services")
    assert len(graph.modules) > 100
    # imports known to exist, one per layer boundary the contracts talk about
    assert graph.direct_import_exists(importer="smsgw.shared.runtime.daemon",
                                      imported="smsgw.shared.queue.store")
    assert graph.direct_import_exists(importer="smsgw.shared.domain.intake",
                                      imported="smsgw.shared.smpp.text")
    assert graph.direct_import_exists(importer="smsgw.services.sender.app",
                                      imported="smsgw.shared.runtime.daemon")
    # and a violation would be seen: the simulator's server imports the codec, so a contract
    # forbidding that import chain must find it
    assert graph.find_shortest_chain(importer="smsgw.services.smsc_sim.server",
                                     imported="smsgw.shared.smpp.pdu")


def test_every_package_folder_is_installed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = {"smsgw." + ".".join(p.parent.relative_to(ROOT).parts)
               for top in ("shared", "services", "migrations")
               for p in (ROOT / top).rglob("__init__.py")}
    assert listed == on_disk
