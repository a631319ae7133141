"""`proofmarket lab`: every mechanism on random seeded markets, attacked, measured, plotted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from deploy.lab.markets import DISTRIBUTIONS

if TYPE_CHECKING:
    from deploy.lab.run import LabConfig


@click.command()
@click.option("--quick", is_flag=True, help="A small run (well under a minute).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--markets", type=click.IntRange(min=1), default=None, help="Markets measured.")
@click.option(
    "--train",
    type=click.IntRange(min=1),
    default=None,
    help="Markets a sealed attacker learns its policy on.",
)
@click.option("--tasks", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--provers", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--fees", type=click.Choice(DISTRIBUTIONS), default="uniform", show_default=True)
@click.option("--fee-range", type=(int, int), default=(1, 100), show_default=True)
@click.option("--costs", type=click.Choice(DISTRIBUTIONS), default="uniform", show_default=True)
@click.option("--cost-range", type=(int, int), default=(1, 60), show_default=True)
@click.option("--capacity-range", type=(int, int), default=(2, 8), show_default=True)
@click.option(
    "--posted-price",
    type=click.IntRange(min=0),
    default=None,
    help="posted's price [default: midpoint of the fee and cost medians].",
)
@click.option("--call-a-bps", type=click.IntRange(0, 10_000), default=5_000, show_default=True)
@click.option("--reserve-cost", type=click.IntRange(min=0), default=None)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=None,
    help="Rounds per market in the capacity-lock runs.",
)
@click.option(
    "--epoch-markets",
    type=click.IntRange(min=1),
    default=None,
    help="Markets in the capacity-lock runs.",
)
@click.option("--epoch-rounds", type=click.IntRange(min=1), default=None, help="E.")
@click.option(
    "--capacity-factor", type=click.IntRange(min=1), default=2, show_default=True, help="m."
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON document.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write PNG plots and report.md here.",
)
def lab(**opts: Any) -> None:
    """Compare every mechanism on random markets, honest and under attack."""
    import json
    from pathlib import Path

    from deploy.lab.report import markdown, write_report
    from deploy.lab.run import run_lab

    doc = run_lab(_config(opts))
    if opts["out_dir"]:
        write_report(doc, Path(str(opts["out_dir"])))
    if opts["as_json"]:
        click.echo(json.dumps(doc))
    else:
        click.echo(markdown(doc))


def _config(opts: dict[str, Any]) -> LabConfig:
    import dataclasses

    from deploy.lab.markets import Prior, Shape
    from deploy.lab.run import LabConfig

    for name in ("fee_range", "cost_range", "capacity_range"):
        low, high = opts[name]
        if not 0 <= low <= high or (name == "capacity_range" and low < 1):
            raise click.BadParameter(
                "need 0 <= LOW <= HIGH", param_hint=f"--{name.replace('_', '-')}"
            )
    shape = Shape(
        tasks=int(opts["tasks"]),
        provers=int(opts["provers"]),
        fees=Prior(str(opts["fees"]), *opts["fee_range"]),
        costs=Prior(str(opts["costs"]), *opts["cost_range"]),
        capacity=opts["capacity_range"],
    )
    seed = int(opts["seed"])
    base = LabConfig.quick(seed) if opts["quick"] else LabConfig(seed=seed)
    changes = {
        k: opts[k]
        for k in (
            "markets",
            "train",
            "rounds",
            "epoch_markets",
            "epoch_rounds",
            "posted_price",
            "reserve_cost",
        )
        if opts[k] is not None
    }
    return dataclasses.replace(
        base,
        shape=shape,
        call_a_bps=opts["call_a_bps"],
        capacity_factor=opts["capacity_factor"],
        **changes,
    )
