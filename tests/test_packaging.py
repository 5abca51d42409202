"""Packaging: lazy imports, one version, the checkout's packages importable, lint config.

Import costs are checked by what a fresh interpreter has loaded (``sys.modules``),
never by timing.
"""

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import wgdiff

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "orbax", "diffrax", "ott", "tensorflow_datasets", "scipy", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    return set(out.split())


def test_import_wgdiff_loads_no_heavy_dependency():
    assert not _loaded_after("import wgdiff") & set(HEAVY)
    # Touching a subpackage imports it (and what it needs), nothing more.
    loaded = _loaded_after("import wgdiff as wg; wg.VPSDE(); wg.train.fit_score_model")
    assert "jax" in loaded
    assert not loaded & {"orbax", "diffrax", "ott", "tensorflow_datasets"}


def test_checkpoints_import_orbax_on_first_use(tmp_path):
    loaded = _loaded_after(
        f"from wgdiff.train import checkpoint_manager; checkpoint_manager({str(tmp_path)!r})"
    )
    assert "orbax" in loaded


def test_every_public_name_resolves():
    for name in wgdiff.__all__:
        assert getattr(wgdiff, name) is not None, name
    assert dir(wgdiff) == sorted(wgdiff.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wgdiff.nope  # noqa: B018


def test_version_is_single_sourced():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert wgdiff.__version__ == metadata.version("wgdiff") == project["version"]
    # Written once, in pyproject.toml: no module of the package repeats the string.
    literal = f'"{project["version"]}"'
    assert not [p.name for p in (REPO / "wgdiff").rglob("*.py") if literal in p.read_text()]


def test_checkout_packages_import_without_sys_path_edits():
    """benchmarks/ and experiments/ are packages of the checkout (pyproject pythonpath)."""
    import benchmarks.runner
    import experiments

    assert Path(benchmarks.runner.__file__).parent == REPO / "benchmarks"
    assert Path(experiments.__file__).parent == REPO / "experiments"
    edit = "sys.path." + "insert"  # spelled apart so this file does not match itself
    for path in REPO.glob("tests/*.py"):
        assert edit not in path.read_text(), path.name


def test_ci_runs_lint_before_tests():
    script = (REPO / ".ci" / "run").read_text()
    lint = script.index("ruff check")
    assert lint < script.index("ruff format --check") < script.index("pytest")
    assert "set -euo pipefail" in script
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "-n auto" in config["tool"]["pytest"]["ini_options"]["addopts"]
