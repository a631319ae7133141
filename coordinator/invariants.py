"""The market's invariants, checked against a coordinator's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordinator.core import Coordinator


def check_invariants(coordinator: Coordinator) -> list[str]:
    """Every market invariant that fails, as readable lines (empty when all hold)."""
    problems: list[str] = []
    ledger = coordinator.accounts
    if not ledger.conserved():
        problems.append(
            f"money not conserved: total {ledger.total()} != funded {ledger.funded()}"
            f" - withdrawn {ledger.withdrawn()}"
        )
    for account, amount in ledger.accounts():
        if amount < 0 and account.kind.value != "external":
            problems.append(f"negative balance {account}: {amount}")
    escrowed: dict[str, int] = {}
    for task in coordinator.tasks():
        if task.status in ("open", "assigned"):
            escrowed[task.user] = escrowed.get(task.user, 0) + task.fee
        if task.settlements > 1:
            problems.append(f"task {task.task_id} settled {task.settlements} times")
        if task.status in ("charged", "refunded", "released") and task.settlements != 1:
            problems.append(f"task {task.task_id} is {task.status} without one settlement")
    for account, amount in ledger.accounts():
        if account.kind.value == "escrow" and escrowed.get(account.owner, 0) != amount:
            problems.append(f"escrow of {account.owner} is {amount}, open bids hold otherwise")
    for user, amount in escrowed.items():
        if coordinator.escrow(user) != amount:
            problems.append(f"escrow of {user} is {coordinator.escrow(user)}, bids hold {amount}")
    p_max = coordinator.params.p_max
    for prover, capacity in coordinator.open_assignments().items():
        if coordinator.locked(prover) < p_max * capacity:
            problems.append(f"prover {prover} has an open batch with too little locked deposit")
    return problems
