"""prover_node."""
