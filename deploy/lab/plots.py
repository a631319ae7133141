"""PNG pictures of clearings and lab figures (matplotlib, Agg backend, no display)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from deploy.lab.compare import Row
from protocol.mechanism import ProverBid, TaskBid

MARKERS = "osD^v<>P"
# Colours for clearing points: tab10 without the curves' blue and red.
POINT_COLOURS = ("C2", "C1", "C4", "C5", "C6", "C8", "C9", "C7")


def _steps(values: Sequence[int]) -> tuple[list[int], list[int]]:
    """x, y of a step curve: the i-th value (0-based) held over quantity [i, i + 1]."""
    xs: list[int] = []
    ys: list[int] = []
    for i, v in enumerate(values):
        xs += [i, i + 1]
        ys += [v, v]
    return xs, ys


def book_curves(
    tasks: Sequence[TaskBid], provers: Sequence[ProverBid]
) -> tuple[list[int], list[int]]:
    """The demand (fees high to low) and supply (unit costs low to high, up to n units)."""
    demand = sorted((t.fee for t in tasks), reverse=True)
    supply: list[int] = []
    for bid in sorted(provers, key=lambda p: p.cost):
        supply += [bid.cost] * min(bid.capacity, len(tasks) + 1 - len(supply))
        if len(supply) > len(tasks):
            break
    return demand, supply


def plot_clearing(
    path: str | os.PathLike[str],
    tasks: Sequence[TaskBid],
    provers: Sequence[ProverBid],
    rows: Sequence[Row],
) -> None:
    """Supply and demand step curves, each mechanism's trades and prices marked on them.

    A uniform-price rule shows its user price (filled) and prover price (hollow) at its
    quantity; a rule without one price shows the mean charge.
    """
    demand, supply = book_curves(tasks, provers)
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=90)
    if demand:
        ax.plot(*_steps(demand), color="tab:blue", lw=2, label="demand (fees)")
    if supply:
        ax.plot(*_steps(supply), color="tab:red", lw=2, label="supply (unit costs)")
    for i, row in enumerate(rows):
        color = POINT_COLOURS[i % len(POINT_COLOURS)]
        q = row.trades
        charges = list(row.outcome.charges.values())
        user = row.user_price if row.user_price is not None else _mean(charges)
        x = q + (i - len(rows) / 2) * 0.06  # a small offset keeps equal points apart
        label = f"{row.mechanism}: {q} trades" + (
            "" if row.user_price is not None else ", mean charge"
        )
        if user is not None:
            ax.scatter(
                [x],
                [user],
                marker=MARKERS[i % len(MARKERS)],
                color=color,
                s=60,
                label=label,
                zorder=3,
            )
        else:
            ax.scatter([x], [0], marker="x", color=color, s=50, label=label, zorder=3)
        if row.prover_price is not None and row.prover_price != user:
            ax.scatter(
                [x],
                [row.prover_price],
                marker=MARKERS[i % len(MARKERS)],
                s=60,
                facecolors="none",
                edgecolors=color,
                zorder=3,
            )
    ax.set_xlabel("tasks (units of capacity)")
    ax.set_ylabel("money per task")
    ax.set_title("supply, demand and each mechanism's clearing")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mean(values: Sequence[int]) -> float | None:
    return sum(values) / len(values) if values else None


def bar_chart(
    path: str | os.PathLike[str],
    title: str,
    ylabel: str,
    groups: Mapping[str, Mapping[str, float]],
    *,
    symlog: bool = False,
) -> None:
    """Grouped bars: one group per key of `groups`, one bar per series inside it.

    `symlog`: a symmetric log scale, for figures that span orders of magnitude and signs.
    """
    labels = list(groups)
    series: list[str] = []
    for values in groups.values():
        series += [s for s in values if s not in series]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4), dpi=80)
    for k, name in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
        ys = [groups[g].get(name, 0.0) for g in labels]
        bars = ax.bar(xs, ys, width, label=name, color=f"C{k}")
        if len(series) == 1:
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel + (" (symlog)" if symlog else ""))
    ax.set_title(title)
    if symlog:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.axhline(0, color="black", lw=0.6)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["bar_chart", "book_curves", "plot_clearing"]


def soak_curves(path: str | os.PathLike[str], samples: Sequence[Mapping[str, object]]) -> None:
    """`bench soak`'s curves: RSS and CPU per round against the round, one line a process.

    In memory a sample holds the one process's `rss_mb` and `cpu_ms` per round; over a
    broker, `rss_mb` and cumulative `cpu_s` per party, whose differences give per round.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), dpi=80, sharex=True)
    rounds = [float(str(s["round"])) for s in samples]
    for name, rss in soak_series(samples, "rss_mb").items():
        top.plot(rounds, rss, label=name, lw=1)
    if samples and "cpu_ms" in samples[0]:
        bottom.plot(rounds, [float(str(s["cpu_ms"])) for s in samples], label="market", lw=1)
    else:
        for name, cpu in soak_series(samples, "cpu_s").items():
            per_round = [
                1000 * (b - a) / max(1.0, r1 - r0)
                for a, b, r0, r1 in zip(cpu, cpu[1:], rounds, rounds[1:], strict=False)
            ]
            bottom.plot(rounds[1:], per_round, label=name, lw=1)
    top.set_ylabel("RSS (MB)")
    bottom.set_ylabel("CPU per round (ms)")
    bottom.set_xlabel("round")
    top.set_title("bench soak")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def soak_series(samples: Sequence[Mapping[str, object]], field: str) -> dict[str, list[float]]:
    """Per process (children of a party left out: their own lines are flat) the values of
    `field` across the samples; a bare number is the one process, "market"."""
    out: dict[str, list[float]] = {}
    for sample in samples:
        value = sample.get(field)
        readings = value if isinstance(value, Mapping) else {"market": value}
        for name, reading in readings.items():
            if ".child-" not in name and isinstance(reading, int | float):
                out.setdefault(name, []).append(float(reading))
    return out
