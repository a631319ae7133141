"""`proofmarket clear` and `proofmarket bench clear`, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE_1 = {
    "tasks": [{"id": f"t{i + 1}", "fee": f} for i, f in enumerate((10, 10, 10, 10, 9, 9, 1, 1))],
    "provers": [
        {"id": "p1", "capacity": 4, "cost": 0},
        {"id": "p2", "capacity": 2, "cost": 1},
        {"id": "p3", "capacity": 2, "cost": 10},
    ],
}


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proofmarket", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clear_reproduces_example_1_from_a_file(tmp_path: Path) -> None:
    """Example 1 from a file prints the documented outcome, keys in the documented order."""
    book = tmp_path / "book.json"
    book.write_text(json.dumps(EXAMPLE_1))
    done = run("clear", str(book))
    assert 0 == done.returncode, done.stderr
    out = json.loads(done.stdout)
    assert [
        "mechanism",
        "allocated_provers",
        "allocated_tasks",
        "user_price",
        "prover_price",
        "assignments",
        "charges",
        "payments",
        "surplus",
        "welfare",
    ] == list(out)
    assert {
        "mechanism": "prooph",
        "allocated_provers": 1,
        "allocated_tasks": 4,
        "user_price": 9,
        "prover_price": 1,
        "assignments": {"p1": ["t1", "t2", "t3", "t4"]},
        "charges": {"t1": 9, "t2": 9, "t3": 9, "t4": 9},
        "payments": {"p1": 4},
        "surplus": 32,
        "welfare": 40,
    } == out


def test_clear_reads_stdin_and_takes_a_mechanism() -> None:
    """`-` reads stdin; --mechanism optimum clears the same book to welfare 56."""
    done = run("clear", "-", "--mechanism", "optimum", stdin=json.dumps(EXAMPLE_1))
    assert 0 == done.returncode, done.stderr
    out = json.loads(done.stdout)
    assert ("optimum", 56, None) == (out["mechanism"], out["welfare"], out["user_price"])


def test_no_trade_prints_zeros_nulls_and_empty_maps() -> None:
    """A book with one feasible prover prints counts 0, prices null, maps empty."""
    book = {"tasks": [{"id": "t", "fee": 5}], "provers": [{"id": "p", "capacity": 1, "cost": 1}]}
    done = run("clear", stdin=json.dumps(book))
    assert 0 == done.returncode, done.stderr
    assert {
        "mechanism": "prooph",
        "allocated_provers": 0,
        "allocated_tasks": 0,
        "user_price": None,
        "prover_price": None,
        "assignments": {},
        "charges": {},
        "payments": {},
        "surplus": 0,
        "welfare": 0,
    } == json.loads(done.stdout)


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("clear",), '{"tasks": [', "malformed JSON"),
        (("clear", "--mechanism", "vickrey"), "{}", "unknown mechanism 'vickrey'"),
        (("clear",), '{"tasks": [{"id": "t1"}]}', "task bid 't1': missing field fee"),
        (("clear",), '{"tasks": [{"id": "t1", "fee": 1.5}]}', "fee must be an integer"),
        (("clear",), '{"provers": [{"id": "p", "capacity": 0, "cost": 1}]}', "capacity 0"),
        (("clear",), '{"tasks": [{"id": "a", "fee": 1}, {"id": "a", "fee": 2}]}', "duplicate id"),
        (("clear", "/no/such/book.json"), "", "cannot read /no/such/book.json"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], stdin: str, needle: str) -> None:
    """Bad input exits 2 with one stderr line naming the problem, and no traceback."""
    done = run(*args, stdin=stdin)
    assert 2 == done.returncode
    assert "" == done.stdout
    lines = done.stderr.strip().splitlines()
    assert 1 == len(lines), done.stderr
    assert needle in lines[0]
    assert "Traceback" not in done.stderr


def test_bench_clear_prints_one_json_line() -> None:
    """bench clear --json prints one line with sizes, the timings and their ratios."""
    done = run("bench", "clear", "--tasks", "20000", "--provers", "200", "--repeat", "2", "--json")
    assert 0 == done.returncode, done.stderr
    lines = done.stdout.strip().splitlines()
    assert 1 == len(lines)
    out = json.loads(lines[0])
    keys = ["tasks", "provers", "clear_s", "sort_s", "ratio", "mechanism_s", "mechanism_ratio"]
    assert [*keys, "intake_us_per_bid", "objects_s"] == list(out)
    assert (20000, 200) == (out["tasks"], out["provers"])
    assert out["clear_s"] / out["sort_s"] == pytest.approx(out["ratio"])
    assert out["mechanism_s"] / out["clear_s"] == pytest.approx(out["mechanism_ratio"])


def test_clear_all_compares_every_mechanism_and_plots(tmp_path: Path) -> None:
    """`clear --mechanism all --json --plot` gives one row per mechanism and writes a PNG."""
    png = tmp_path / "book.png"
    done = run(
        "clear",
        "--mechanism",
        "all",
        "--posted-price",
        "5",
        "--json",
        "--plot",
        str(png),
        stdin=json.dumps(EXAMPLE_1),
    )
    assert 0 == done.returncode, done.stderr
    rows = {r["mechanism"]: r for r in json.loads(done.stdout)}
    assert ["prooph", "mcafee", "posted", "pay-as-bid", "call-market", "vcg", "optimum"] == list(
        rows
    )
    assert (4, 40, 0.7143) == tuple(rows["prooph"][k] for k in ("trades", "welfare", "efficiency"))
    assert (6, 6, 5, 6) == tuple(
        rows["mcafee"][k] for k in ("trades", "user_price", "prover_price", "surplus")
    )
    assert -50 == rows["vcg"]["surplus"]
    assert 1.0 == rows["optimum"]["efficiency"]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_clear_takes_parameters_from_a_market_file(tmp_path: Path) -> None:
    """A market file naming `posted` at 9 clears Example 1 at 9; an option overrides it."""
    market = tmp_path / "m.toml"
    market.write_text('mechanism = "posted"\nposted_price = 9\n')
    done = run("clear", "--market", str(market), stdin=json.dumps(EXAMPLE_1))
    assert 0 == done.returncode, done.stderr
    assert (9, 6) == (
        json.loads(done.stdout)["user_price"],
        json.loads(done.stdout)["allocated_tasks"],
    )
    done = run(
        "clear", "--market", str(market), "--posted-price", "10", stdin=json.dumps(EXAMPLE_1)
    )
    assert (10, 4) == (
        json.loads(done.stdout)["user_price"],
        json.loads(done.stdout)["allocated_tasks"],
    )
