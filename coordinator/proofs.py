"""Proof submissions, as rules: the batch a submission is for, and its new proofs checked.

The first proof given for a task is final, so a prover cannot grind for a valid one.
Proofs are taken until the round settles: its prove deadline plus the grace
(`late_grace_ms`), within which they are graded late. Pure: verification is a function
of the task, the proof and the difficulty (protocol/workload.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.state import Batch, Refusal, Round, TaskKey, TaskState
from protocol.messages import ProofSubmission
from protocol.rejects import RejectCode
from protocol.workload import verify_batch


def batch_for_proofs(
    msg: ProofSubmission, sender: str, rounds: Mapping[int, Round], floor: int
) -> tuple[Round, Batch]:
    """The round and the batch of `sender`'s that `msg` brings proofs for."""
    r = rounds.get(msg.round)
    batch = None if r is None else r.batches.get(sender)
    if r is None and msg.round < floor:
        raise Refusal(RejectCode.LATE_PROOF, f"round {msg.round} settled long ago")
    if r is None or batch is None:
        raise Refusal(RejectCode.NOT_ASSIGNED, f"no batch assigned to you in round {msg.round}")
    return r, batch


def check_proofs(
    msg: ProofSubmission,
    r: Round,
    batch: Batch,
    tasks: Mapping[TaskKey, TaskState],
    *,
    now: int,
    settle_at: int,
    difficulty: int,
) -> dict[TaskKey, bytes | None]:
    """Each task's first proof in `msg`, checked: the proof, or None if it is invalid.

    In the order `msg` gives them; empty when `msg` brings no task a new proof.
    """
    if batch.settled or now > settle_at:
        raise Refusal(
            RejectCode.LATE_PROOF, f"round {msg.round} proofs were due by {r.prove_deadline}"
        )
    assigned = {tasks[k].wire_id: k for k in batch.tasks}
    stray = [p.task_id for p in msg.proofs if p.task_id not in assigned]
    if stray:
        raise Refusal(RejectCode.NOT_ASSIGNED, f"task {stray[0]!r} is not in your batch")
    fresh: dict[TaskKey, bytes] = {}
    for p in msg.proofs:
        key = assigned[p.task_id]
        if key not in batch.proofs and key not in fresh:
            fresh[key] = p.proof
    if not fresh:
        return {}
    ids = list(fresh)
    valid = verify_batch(
        [tasks[t].task_input for t in ids], [fresh[t] for t in ids], difficulty=difficulty
    )
    return {key: fresh[key] if ok else None for key, ok in zip(ids, valid, strict=True)}
