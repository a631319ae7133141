"""The IO every service shares, and nothing else: the bus, the clock, stop signals,
logging set-up and publish retrying.

Layers, bottom up: `protocol` (pure rules every party shares) < `runtime` (this) <
the roles (`coordinator`, `prover_node`, `user_client`, never importing one another) <
`deploy` (testnet, simulation, genesis and market files, brokers) < `proofmarket` (CLI).
Pure modules (all of `protocol`, each role's core) never import this package;
`tests/test_architecture.py` holds the tree to that.
"""
