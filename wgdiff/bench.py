"""``wgdiff bench``: the benchmark suite of a source checkout, from the console script.

The suite is the repository's ``benchmarks/`` package; it is not installed with
wgdiff (its records belong to the checkout). ``wgdiff bench ARGS`` runs
``python -m benchmarks ARGS`` in a child interpreter that sees the checkout this
wgdiff was installed from (an editable install, ``pip install -e .``); this
process's ``sys.path`` is left alone. From an installed wheel there is no suite,
and ``wgdiff bench`` says so and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent

NEEDS_CHECKOUT = (
    "wgdiff bench needs a source checkout: the benchmark suite (benchmarks/) is not "
    "part of the installed package (looked for {path}). Clone the repository, "
    "`pip install -e .` there, and run `wgdiff bench` or `python -m benchmarks`."
)


def checkout() -> Path | None:
    """The source checkout next to this package, or None for an installed wheel."""
    return _REPO if (_REPO / "benchmarks" / "runner.py").is_file() else None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``wgdiff`` sub-command parser (for ``wgdiff --help``).

    The arguments are the runner's own (``wgdiff bench --help`` shows them); ``wgdiff``'s
    ``main`` hands them to :func:`main` unparsed.
    """
    parser = subparsers.add_parser(
        "bench",
        add_help=False,
        help="run the benchmark suite of a source checkout (python -m benchmarks)",
        description="Run every benchmarks/bench_*.py (each in its own process), write "
        "benchmarks/results/<name>.json and one markdown table of the headline numbers.",
    )
    parser.set_defaults(func=lambda args: main([]))
    return parser


def main(argv: list[str]) -> int:
    """Run ``python -m benchmarks *argv`` against the checkout; its exit code.

    Returns 2 with a message on stderr when there is no checkout.
    """
    repo = checkout()
    if repo is None:
        print("error: " + NEEDS_CHECKOUT.format(path=_REPO / "benchmarks"), file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "benchmarks", *argv], env=env).returncode
