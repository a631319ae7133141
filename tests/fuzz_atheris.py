"""Coverage-guided fuzzing of one decoder with atheris, for long runs by hand.

    pip install atheris
    python tests/fuzz_atheris.py envelope -max_total_time=600

The first argument names a target of tests/fuzz_targets.py; the rest go to libFuzzer.
The run starts from the target's kept cases in tests/fuzz_corpus/<target>/ and writes any
crashing input to the current directory as crash-<sha1>: copy it into the corpus folder,
fix the decoder, and the suite replays it from then on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from fuzz_targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(sorted(TARGETS))}}} [libFuzzer options]")
    name = sys.argv.pop(1)
    seeds = Path(__file__).parent / "fuzz_corpus" / name
    argv = [*sys.argv, str(seeds)] if seeds.is_dir() else sys.argv
    atheris.Setup(argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
