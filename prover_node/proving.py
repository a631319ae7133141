"""Carrying out a `StartProving` effect: the batched workload, as plain functions.

They are top-level functions of picklable values so a process pool can run them, and
`prove_assignment` is what the simulation calls inline; either way the result comes
back to the core as `ProvingDone`.
"""

from __future__ import annotations

from protocol import workload
from protocol.messages import AssignedTask, TaskProof
from prover_node.core import StartProving


def prove_assignment(start: StartProving) -> list[TaskProof]:
    """Prove a whole assigned batch, one proof per task in assignment order."""
    return prove_tasks(start.tasks, difficulty=start.difficulty, setup=start.setup)


def prove_tasks(tasks: list[AssignedTask], *, difficulty: int, setup: int) -> list[TaskProof]:
    """Prove `tasks` as one batch (paying `setup` once)."""
    proofs = workload.prove_batch(
        [task.task_input for task in tasks], difficulty=difficulty, setup=setup
    )
    return [TaskProof(task.task_id, proof) for task, proof in zip(tasks, proofs, strict=True)]


def split_batch(tasks: list[AssignedTask], parts: int) -> list[list[AssignedTask]]:
    """Split a batch into at most `parts` contiguous, near-equal, non-empty chunks.

    Each chunk is proven on its own worker and pays the setup again: with W idle
    workers, a batch finishes in about setup + difficulty * n / W steps instead of
    setup + difficulty * n, which is what keeps a large batch inside its deadline.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    parts = min(parts, len(tasks)) or 1
    size, extra = divmod(len(tasks), parts)
    chunks, at = [], 0
    for i in range(parts):
        end = at + size + (1 if i < extra else 0)
        chunks.append(tasks[at:end])
        at = end
    return chunks


def warm_up() -> int:
    """A no-op for each new worker to run first, so imports are paid before a deadline."""
    return workload.PROOF_SIZE
