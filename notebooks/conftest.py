"""pytest --nbval-lax notebooks/: run the six notebooks in smoke mode.

nbval cannot inject papermill parameters, so the notebooks read HAFVT_SMOKE from the environment:
a tiny demo scenario (build/smoke/demo), one epoch, one seed. The kernels nbval starts inherit this
process's environment. Smoke runs start clean so that every session trains what it shows.
"""
import os
import shutil
from pathlib import Path

os.environ.setdefault("HAFVT_SMOKE", "1")
_SMOKE_RUNS = Path(__file__).resolve().parents[1] / "build" / "smoke" / "runs"


def pytest_sessionstart(session):
    if os.environ.get("HAFVT_SMOKE") not in (None, "", "0") and any(
            str(a).rstrip("/").endswith("notebooks") or str(a).endswith(".ipynb") for a in session.config.args):
        shutil.rmtree(_SMOKE_RUNS, ignore_errors=True)
