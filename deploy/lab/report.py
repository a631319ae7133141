"""A lab run written out: PNG plots and a Markdown report of the same figures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.lab.plots import bar_chart

PLOTS = {
    "efficiency": "efficiency.png",
    "gains": "gains-informed.png",
    "losses": "losses-sealed.png",
    "sealing": "sealed-vs-informed.png",
    "epochs": "epochs.png",
}


def write_plots(doc: Mapping[str, Any], out: Path) -> list[Path]:
    """The lab's five pictures, as PNGs in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    mechs: Mapping[str, Any] = doc["mechanisms"]
    devs: Mapping[str, Mapping[str, Any]] = doc["deviations"]
    paths = {k: out / v for k, v in PLOTS.items()}
    bar_chart(
        paths["efficiency"],
        "honest markets: mean efficiency against the optimum",
        "welfare / optimum welfare",
        {m: {"efficiency": v["efficiency"] or 0.0} for m, v in mechs.items()},
    )
    bar_chart(
        paths["gains"],
        "informed attacker: mean gain per market",
        "money per market",
        {d: {m: v["informed"]["mean_gain"] for m, v in by.items()} for d, by in devs.items()},
        symlog=True,
    )
    bar_chart(
        paths["losses"],
        "sealed attacker: share of markets where its policy loses money",
        "loss rate",
        {d: {m: v["sealed"]["loss_rate"] for m, v in by.items()} for d, by in devs.items()},
    )
    bar_chart(
        paths["sealing"],
        "Proo-phi: mean gain, informed against sealed",
        "money per market",
        {
            d: {k: by["prooph"][k]["mean_gain"] for k in ("informed", "sealed", "sealed_forced")}
            for d, by in devs.items()
            if "prooph" in by
        },
        symlog=True,
    )
    bar_chart(
        paths["epochs"],
        "capacity misreport over rounds: mean gain per round",
        "money per round",
        {
            m: {
                "epochs off (informed)": v["off_mean_gain"],
                "epochs on (sealed)": v["on_mean_gain"],
                "epochs on (forced)": v["on_forced_mean_gain"],
            }
            for m, v in doc["epochs"].items()
        },
        symlog=True,
    )
    return list(paths.values())


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _table(heads: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown(doc: Mapping[str, Any], images: str = ".") -> str:
    """The run's tables (and links to its plots under `images`) as Markdown."""
    c = doc["config"]
    lines = [
        "# proofmarket lab report",
        "",
        f"Seed {c['seed']}: {c['markets']} markets (sealed attackers trained on {c['train']} "
        f"more), {c['tasks']} task bids and {c['provers']} prover bids each; fees "
        f"{c['fees'][0]} in {c['fees'][1]}..{c['fees'][2]}, costs {c['costs'][0]} in "
        f"{c['costs'][1]}..{c['costs'][2]}, capacities {c['capacity'][0]}..{c['capacity'][1]}; "
        f"posted price {c['posted_price']}, call-market a = {c['call_a_bps'] / 10_000}, "
        f"reserve {_cell(c['reserve_cost'])}.",
        "",
        "## Honest markets",
        "",
    ]
    heads = ["mechanism", "efficiency", "min", "welfare", "surplus", "volume", "no trade"]
    keys = ["efficiency", "efficiency_min", "welfare", "surplus", "volume", "no_trade_rate"]
    lines += _table(heads, [[m, *(v[k] for k in keys)] for m, v in doc["mechanisms"].items()])
    lines += ["", f"![efficiency]({images}/{PLOTS['efficiency']})", "", "## Deviations", ""]
    heads = ["deviation", "mechanism", "informed mean", "informed max", "informed pays"]
    heads += ["harmful share", "sealed policy", "sealed mean", "sealed loses"]
    heads += ["forced policy", "forced mean", "forced loses"]
    rows = []
    for dev, by in doc["deviations"].items():
        for m, v in by.items():
            i, s, f = v["informed"], v["sealed"], v["sealed_forced"]
            row = [dev, m, i["mean_gain"], i["max_gain"], i["profitable_rate"], i["harmful_share"]]
            row += [s["policy"], s["mean_gain"], s["loss_rate"]]
            rows.append([*row, f["policy"], f["mean_gain"], f["loss_rate"]])
    lines += _table(heads, rows)
    lines += [
        "",
        "Gains are the coalition's utility at true values less its honest utility, per market.",
        "*informed pays*: share of markets where the informed attacker's best policy gains;",
        "*harmful share*: of all paying (market, policy) pairs, the share that lowered welfare;",
        "*sealed loses*: share of markets where the sealed policy lost money; *forced*: the",
        "sealed attacker that must deviate, playing its best-on-average policy.",
        "",
        f"![gains]({images}/{PLOTS['gains']})",
        f"![losses]({images}/{PLOTS['losses']})",
        f"![sealing]({images}/{PLOTS['sealing']})",
        "",
        "## Capacity lock",
        "",
        f"{c['epoch_markets']} markets of {c['rounds']} rounds, users redrawn each round; "
        f"epochs of E = {c['epoch_rounds']} rounds, capacity factor m = {c['capacity_factor']}.",
        "",
    ]
    heads = ["mechanism", "off: mean gain", "off: pays", "on: mean gain", "on: loses"]
    heads += ["on, forced: mean gain", "on, forced: loses"]
    keys = ["off_mean_gain", "off_profitable_rate", "on_mean_gain", "on_loss_rate"]
    keys += ["on_forced_mean_gain", "on_forced_loss_rate"]
    lines += _table(heads, [[m, *(v[k] for k in keys)] for m, v in doc["epochs"].items()])
    lines += ["", f"![epochs]({images}/{PLOTS['epochs']})", ""]
    return "\n".join(lines)


def write_report(doc: Mapping[str, Any], out: Path) -> Path:
    """Plots and report.md in `out`; the report's path."""
    write_plots(doc, out)
    path = out / "report.md"
    path.write_text(markdown(doc))
    return path
