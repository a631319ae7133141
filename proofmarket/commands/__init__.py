"""Subcommands of `proofmarket`; each module keeps its heavy imports inside the command."""
