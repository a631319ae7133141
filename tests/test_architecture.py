"""The tree keeps one direction of dependency (docs/architecture.md).

Every import in the shipped packages, lazy and type-only ones included, is read with
`ast` and checked against the layers: protocol < runtime < roles < deploy < CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYER = {
    "protocol": 0,
    "runtime": 1,
    "coordinator": 2,
    "prover_node": 2,
    "user_client": 2,
    "deploy": 3,
    "proofmarket": 4,
}
ROLES = {"coordinator", "prover_node", "user_client"}
ENTRY_POINT_LAYER = LAYER["proofmarket"] + 1  # `python -m prover_node` opens the CLI

PURE_MODULES = {
    "coordinator.core",
    "coordinator.accounts",
    "coordinator.bids",
    "coordinator.capacity",
    "coordinator.clearing",
    "coordinator.funds",
    "coordinator.market_state",
    "coordinator.notices",
    "coordinator.proofs",
    "coordinator.views",
    "coordinator.settlement",
    "coordinator.track_record",
    "coordinator.state",
    "coordinator.records",
    "coordinator.schedule",
    "coordinator.invariants",
    "coordinator.status",
    "coordinator.report",
    "coordinator.snapshot",
    "prover_node.core",
    "prover_node.proving",
    "user_client.core",
    "user_client.identities",
}
"""Role modules that are rules, not IO; every `protocol` module is pure too."""

IMPURE = {"asyncio", "socket", "aiomqtt", "threading", "subprocess", "time", "runtime"}
"""What a pure module never imports: no event loop, sockets, clocks or shared IO."""


def modules() -> Iterator[tuple[str, Path]]:
    """Each shipped module's dotted name and file."""
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, wherever in the file the import statement is."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def layer_of(module: str) -> int:
    """The layer a shipped module sits in; entry points sit with the CLI."""
    if module.endswith(".__main__"):
        return ENTRY_POINT_LAYER
    return LAYER[module.split(".")[0]]


def edge_allowed(importer: str, imported: str) -> bool:
    """Whether the layering lets `importer` import `imported` (both shipped)."""
    top_from, top_to = importer.split(".")[0], imported.split(".")[0]
    if top_from == top_to:
        return True
    if top_from in ROLES and top_to in ROLES and not importer.endswith(".__main__"):
        return False
    return layer_of(importer) > LAYER[top_to]


EDGES = sorted(
    (name, imported)
    for name, path in modules()
    for imported in set(imports(path))
    if imported.split(".")[0] in LAYER
)


def test_no_import_goes_against_the_layers() -> None:
    """No module imports a layer above its own, and no role imports another role."""
    assert [] == [edge for edge in EDGES if not edge_allowed(*edge)]


def test_the_check_sees_lazy_imports() -> None:
    """The import walk finds imports inside functions, so a lazy edge cannot hide."""
    found = set(imports(ROOT / "proofmarket" / "commands" / "services.py"))
    assert "prover_node.service" in found


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("coordinator.service", "runtime.bus", True),
        ("user_client.service", "prover_node.service", False),
        ("protocol.wire", "runtime.bus", False),
        ("coordinator.service", "deploy.genesis", False),
        ("deploy.testnet", "coordinator.service", True),
        ("prover_node.__main__", "proofmarket.commands.services", True),
    ],
)
def test_edge_rule(importer: str, imported: str, allowed: bool) -> None:
    """The rule itself refuses the edges this tree used to have and allows the right ones."""
    assert allowed == edge_allowed(importer, imported)


def test_pure_modules_do_no_io() -> None:
    """Protocol rules and role cores import no event loop, socket, clock or runtime."""
    pure = {name for name, _ in modules() if name.startswith("protocol")} | PURE_MODULES
    offending = [
        (name, imported)
        for name, path in modules()
        if name in pure
        for imported in set(imports(path))
        if imported.split(".")[0] in IMPURE
    ]
    assert [] == sorted(offending)


def test_aiomqtt_lives_in_one_module() -> None:
    """Only the bus talks MQTT; everything else sees its small surface."""
    users = {
        name
        for name, path in modules()
        if any(i == "aiomqtt" or i.startswith("aiomqtt.") for i in imports(path))
    }
    assert {"runtime.bus"} == users
