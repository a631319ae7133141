"""Carrying out a `StartProving` effect: the batched workload, as a plain function.

It is a top-level function of picklable values so a process pool can run it, and it is
what the simulation calls inline; both then feed the result back as `ProvingDone`.
"""

from __future__ import annotations

from protocol import workload
from protocol.messages import TaskProof
from prover_node.core import StartProving


def prove_assignment(start: StartProving) -> list[TaskProof]:
    """Prove a whole assigned batch, one proof per task in assignment order."""
    proofs = workload.prove_batch(
        [task.task_input for task in start.tasks],
        difficulty=start.difficulty,
        setup=start.setup,
    )
    return [TaskProof(task.task_id, proof) for task, proof in zip(start.tasks, proofs, strict=True)]
