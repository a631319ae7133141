"""proofmarket: a market for zero-knowledge-proof generation (command-line entry point)."""

__version__ = "0.1.0"
