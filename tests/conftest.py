import os
import subprocess
from pathlib import Path

import pytest

# Tests run on CPU with float32 by default; individual tests enable x64 locally.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The default run is bound by XLA compilation, not by executing the small programs it
# compiles: LLVM at -O0 cut the CPU time of the sampler/solver/UNet/evaluation tests
# from 190 to 134 s (same tests passing). Set before JAX starts its backend; a flag the
# caller already chose is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

_ROOT = Path(__file__).resolve().parent.parent
_STATUS_KEY = pytest.StashKey[str | None]()


def _git_status() -> str | None:
    """``git status --porcelain`` of the checkout, or None outside a git work tree."""
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # xdist workers carry workerinput


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        session.config.stash[_STATUS_KEY] = _git_status()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test run leaves the checkout as it found it: fail the run if ``git status`` changed."""
    if not _is_controller(session.config):
        return
    before = session.config.stash.get(_STATUS_KEY, None)
    if before is None:
        return
    after = _git_status()
    if after is not None and after != before:
        changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        print(
            "\nThe run changed the checkout (a test wrote into it, or files were edited "
            "meanwhile):\n  " + "\n  ".join(changed)
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
