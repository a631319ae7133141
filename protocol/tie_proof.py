"""Unpredictable ties: a round's tie seed from the coordinator's signature.

With `signed_ties`, the seed that orders equal bids in round r is
blake2b-256(sig), where sig is the coordinator's Ed25519 signature over
`tie_message(market, r)`. Ed25519 signatures are deterministic, so the coordinator has
exactly one seed per round and cannot grind for a better one; nobody else can compute it
before the ClearingResult publishes sig as `tie_proof`; afterwards anyone checks sig with
the coordinator's public key and re-derives the seed. (The plain seed `market/round` is
known before bidding, so task ids could be ground to win ties at the margin.)
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import nacl.exceptions

DOMAIN = b"proofmarket/tie-seed/v1\x00"


def tie_message(market: str, round_number: int) -> bytes:
    """The bytes the coordinator signs for round `round_number`'s tie seed."""
    return DOMAIN + market.encode("utf-8") + b"/" + str(round_number).encode("ascii")


def seed_from_proof(proof: bytes) -> bytes:
    """The tie seed a tie proof (a signature) stands for."""
    return hashlib.blake2b(proof, digest_size=32).digest()


def plain_seed(market: str, round_number: int) -> bytes:
    """The seed of a market without signed ties: public before bidding."""
    return f"{market}/{round_number}".encode()


def check_tie_proof(coordinator: str, market: str, round_number: int, proof: bytes) -> bytes:
    """The round's tie seed, if `proof` is the coordinator's signature over the round's tie
    message; ValueError otherwise. `coordinator` is its public key as 64 hex."""
    try:
        key = bytes.fromhex(coordinator)
        sodium.crypto_sign_open(proof + tie_message(market, round_number), key)
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        raise ValueError(f"round {round_number}: tie proof is not the coordinator's") from None
    return seed_from_proof(proof)
