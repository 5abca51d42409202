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


# -- type annotations on the public API ----------------------------------------------------


def public_functions() -> dict[str, object]:
    """``module.name`` (and ``module.Class.method``) of every public function of wgdiff."""
    import importlib
    import inspect
    import pkgutil

    found = {}
    for info in pkgutil.walk_packages(wgdiff.__path__, "wgdiff."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if n[0] != "_"]
        for name in names:
            obj = getattr(module, name, None)
            if getattr(obj, "__module__", None) != info.name:
                continue  # re-exported or generated elsewhere
            if inspect.isfunction(obj):
                found[f"{info.name}.{name}"] = obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    member = getattr(member, "__func__", member)  # static/class methods
                    public = attr[0] != "_" or attr == "__call__"
                    if public and inspect.isfunction(member) and member.__module__ == info.name:
                        found[f"{info.name}.{name}.{attr}"] = member
    return found


def missing_annotations(fn) -> list[str]:
    import inspect

    sig = inspect.signature(fn)
    empty = inspect.Parameter.empty
    params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
    missing = [p.name for p in params if p.annotation is empty]
    return missing + (["return"] if sig.return_annotation is inspect.Signature.empty else [])


def test_public_functions_are_annotated():
    functions = public_functions()
    lacking = {name: missing_annotations(fn) for name, fn in functions.items()}
    lacking = {name: miss for name, miss in lacking.items() if miss}
    listing = "\n".join(f"  {name}: {', '.join(miss)}" for name, miss in sorted(lacking.items()))
    print(f"{len(lacking)} of {len(functions)} public functions lack annotations:\n{listing}")
    assert not lacking, listing
    # The check itself: an unannotated function is reported, an annotated one is not.
    assert missing_annotations(lambda x, y=1: x) == ["x", "y", "return"]

    def annotated(x: int, *, y: float = 1.0) -> float:
        return x * y

    assert missing_annotations(annotated) == []
