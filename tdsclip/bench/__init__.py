"""Benchmarking: what a configured TDS-CLIP costs to train and run, measured in child processes.

The command line is ``python -m tdsclip.benchmark`` (``tdsclip/benchmark.py``, a thin entry
point; its options are documented in ``cli``). One concern per module:

- ``cli``: the options (``parse_args``) and ``main``, which measures or reads ``--from-json``,
  prints the tables and writes ``--json``; it also answers the internal ``--child`` calls.
- ``runner``: ``benchmark(args)``, the parent's plan of children (implementations, modes,
  batch sizes, interleaved rounds, memory, inference, breakdown) and the derived ratios.
- ``child``: one measurement in a fresh process (``child_measure``), and ``run_child``, which
  starts that process as ``python -m tdsclip.benchmark --child SPEC OUT``.
- ``builders``: the composed config and the models measured: ours, the authors' reference,
  the full fine-tune baseline, and the frozen tower alone (the floor).
- ``flops``: multiply-add counting (``count_gmac``, ``count_flops``) and the paper's figures.
- ``breakdown``: the profiler's split of a call's CPU time (``op_breakdown``, ``side_share``).
- ``report``: the machine measured on, and the report as text and Markdown tables.
"""
