"""``wgdiff bench``: the benchmark suite of a source checkout, from the console script.

The suite lives in the repository's ``benchmarks/`` package, next to this
package, and is not installed with wgdiff; ``wgdiff bench`` finds it there
(an editable install, ``pip install -e .``) and runs ``benchmarks.runner``
with the same options as ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def _runner():
    """Import ``benchmarks.runner`` from the checkout this wgdiff was installed from."""
    if not (_REPO / "benchmarks" / "runner.py").is_file():
        raise ValueError(
            f"wgdiff bench needs the source checkout's benchmarks/ folder (looked in {_REPO}); "
            "install wgdiff with `pip install -e .` from a clone of the repository"
        )
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))
    return importlib.import_module("benchmarks.runner")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``wgdiff`` sub-command parser."""
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite and write benchmarks/results/SUMMARY.md",
        description="Run every benchmarks/bench_*.py (each in its own process), write "
        "benchmarks/results/<name>.json and one markdown table of the headline numbers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # The runner's options are defined once, in benchmarks.runner.build_parser; the
    # default results directory there is the checkout's benchmarks/results.
    if (_REPO / "benchmarks" / "runner.py").is_file():
        _runner().build_parser(parser)
    parser.set_defaults(func=cmd_bench)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the suite; exit code 0 when every benchmark ran, 1 when one failed."""
    return _runner().run_from_args(args)
