"""Paper reproductions, one module per result (``python -m experiments.<name> [--quick]``).

A package of the source checkout, like ``benchmarks``: importable as
``from experiments import wpo_kernel`` from the repository root (pytest puts the root on
``sys.path`` through ``pythonpath = ["."]`` in pyproject.toml). Not installed with wgdiff.
"""
