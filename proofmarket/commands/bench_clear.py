"""`proofmarket bench clear`: Proo-phi's array path against a numpy sort of the same fees."""

from __future__ import annotations

import click


@click.command("clear")
@click.option(
    "--tasks", "n_tasks", type=click.IntRange(min=1), default=1_000_000, show_default=True
)
@click.option(
    "--provers", "n_provers", type=click.IntRange(min=1), default=10_000, show_default=True
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Runs per timing; the best one counts.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def bench_clear(n_tasks: int, n_provers: int, repeat: int, seed: int, as_json: bool) -> None:
    """Time a full Proo-phi clearing of a random round against np.sort of its fees.

    Fees and costs are uniform integers in [0, 10**6); capacities are uniform in
    1..2*tasks/provers, so supply and demand are about equal and the crossing falls
    inside the book. ratio = clear_s / sort_s. `mechanism_s` times the path the
    coordinator takes: its round's book as columns (fees, and tie-key prefixes it took as
    the bids came in) through `clear_columns` (prover checks and order, the kernel with
    equal fees ranked by tie key, the outcome by position); mechanism_ratio =
    mechanism_s / clear_s. `intake_us_per_bid` is what taking a bid's tie prefix costs
    at intake, and `objects_s` the bid-object path (`Mechanism.clear`: an Outcome keyed
    by id), for callers that hold bids as objects.
    """
    import gc
    import json
    import time

    import numpy as np

    from protocol.mechanism.arrays import clear_prooph_arrays
    from protocol.mechanism.base import ProverBid, TaskBid
    from protocol.mechanism.clearing import TaskColumns, clear_indexed
    from protocol.mechanism.registry import make_mechanism
    from protocol.mechanism.ties import tie_keyer, tie_prefix

    rng = np.random.default_rng(seed)
    fees = rng.integers(0, 10**6, size=n_tasks, dtype=np.int64)
    costs = rng.integers(0, 10**6, size=n_provers, dtype=np.int64)
    top = max(1, 2 * n_tasks // n_provers)
    capacities = rng.integers(1, top + 1, size=n_provers, dtype=np.int64)

    def best(run: object) -> float:
        assert callable(run)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    # Interleave so that both timings see the same machine load.
    clear_s = best(lambda: clear_prooph_arrays(fees, capacities, costs))
    sort_s = best(lambda: np.sort(fees))
    clear_s = min(clear_s, best(lambda: clear_prooph_arrays(fees, capacities, costs)))
    sort_s = min(sort_s, best(lambda: np.sort(fees)))
    task_bids = [TaskBid(f"t{i}", int(f)) for i, f in enumerate(fees.tolist())]
    prover_bids = [
        ProverBid(f"p{j}", int(c), int(k))
        for j, (c, k) in enumerate(zip(capacities.tolist(), costs.tolist(), strict=True))
    ]
    mechanism = make_mechanism("prooph")
    # The bid objects are long-lived, as a coordinator's state is; like the coordinator
    # (runtime.heap), keep the cyclic collector from rescanning them in every timing.
    gc.collect()
    gc.freeze()
    # What the coordinator takes as bids come in: each bid's tie-key prefix.
    start = time.perf_counter()
    columns = TaskColumns.of(task_bids, b"bench")
    intake_us = (time.perf_counter() - start) / n_tasks * 1e6
    key = tie_keyer(b"bench")
    prover_ties = [tie_prefix(key(p.id)) for p in prover_bids]
    # Interleaved with the kernel again, so the ratio compares like with like.
    mechanism_s = best(lambda: clear_indexed(mechanism, columns, prover_bids, prover_ties))
    clear_s = min(clear_s, best(lambda: clear_prooph_arrays(fees, capacities, costs)))
    mechanism_s = min(
        mechanism_s, best(lambda: clear_indexed(mechanism, columns, prover_bids, prover_ties))
    )
    objects_s = float("inf")
    for _ in range(2):  # seconds a run at a million bids: two runs, not `repeat`
        start = time.perf_counter()
        mechanism.clear(task_bids, prover_bids, seed=b"bench")
        objects_s = min(objects_s, time.perf_counter() - start)
    ratio = clear_s / sort_s
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tasks": n_tasks,
                    "provers": n_provers,
                    "clear_s": clear_s,
                    "sort_s": sort_s,
                    "ratio": ratio,
                    "mechanism_s": mechanism_s,
                    "mechanism_ratio": mechanism_s / clear_s,
                    "intake_us_per_bid": intake_us,
                    "objects_s": objects_s,
                }
            )
        )
    else:
        click.echo(
            f"clear {n_tasks} task bids x {n_provers} provers: {clear_s * 1e3:.2f} ms; "
            f"np.sort of the fees: {sort_s * 1e3:.2f} ms; ratio {ratio:.2f}; the coordinator's "
            f"path (columns): {mechanism_s * 1e3:.1f} ms, {mechanism_s / clear_s:.1f}x the "
            f"kernel, after {intake_us:.2f} us a bid at intake; bid objects: "
            f"{objects_s * 1e3:.0f} ms"
        )
