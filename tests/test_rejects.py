"""The reject registry is the one list of wire codes, and the docs say the same."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.errors import ERRORS
from protocol.rejects import MARKET_CODES, MEANINGS, RejectCode

DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented_codes(path: Path, heading: str) -> set[str]:
    """The backticked codes in the first column of the tables under `heading`."""
    text = path.read_text()
    section = text[text.index(heading) :]
    following = section.find("\n## ", len(heading))
    section = section if following < 0 else section[:following]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


def test_protocol_doc_lists_every_wire_code() -> None:
    """docs/protocol.md's error codes are exactly the registry's."""
    assert {c.value for c in RejectCode} == documented_codes(DOCS / "protocol.md", "## Error codes")


def test_every_code_has_a_meaning() -> None:
    """Each code carries a one-line meaning in the registry."""
    assert [] == [c for c in RejectCode if not MEANINGS.get(c)]


def test_market_rules_doc_uses_market_codes() -> None:
    """Every code docs/market.md's rule table names is a market code of the registry."""
    text = (DOCS / "market.md").read_text()
    section = text[text.index("## Rules and reject codes") :]
    section = section[: section.index("\n## ", 5)]
    named = set(re.findall(r"\| `([a-z_]+)` \|$", section, re.M))
    assert set() == named - {c.value for c in MARKET_CODES}
    assert len(named) > 10


def test_protocol_errors_take_their_codes_from_the_registry() -> None:
    """Every protocol error that reaches the wire carries a registry code."""
    local = {"bad_key_file"}
    assert [] == [e.code for e in ERRORS if e.code not in local and e.code not in set(RejectCode)]
