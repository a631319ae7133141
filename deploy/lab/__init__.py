"""The mechanism lab: every mechanism on the same bids, agents that attack them, figures.

Pure computation over protocol.mechanism (seeded randomness, no IO) except `plots` and
`report`, which write files. The CLI (`proofmarket clear --mechanism all`, `proofmarket
lab`) calls in here.
"""
