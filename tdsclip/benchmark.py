"""Cost of a configured TDS-CLIP: parameters, FLOPs, training step, memory, inference.

    python -m tdsclip.benchmark --experiment ssv2_b16_8f --batch-sizes 1 2 --json bench.json

The entry point only, also of the benchmark's own ``--child`` processes; the code, and the
options' documentation (``--help``), are in ``tdsclip.bench`` (``tdsclip/bench/cli.py``).
"""

from tdsclip.bench.cli import main

if __name__ == "__main__":
    main()
