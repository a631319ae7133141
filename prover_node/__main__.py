"""`python -m prover_node ...` is `proofmarket prover ...`."""

from proofmarket.commands.services import prover

if __name__ == "__main__":
    prover(prog_name="python -m prover_node")
