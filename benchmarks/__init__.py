"""wgdiff benchmark suite: each ``bench_*.py`` module exposes ``run(quick: bool) -> dict``."""
