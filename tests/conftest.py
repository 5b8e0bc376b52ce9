import os
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real C2DSR Food-Kitchen files, pointed at by HAFVT_REAL_DATA (set by .ci/run)."""
    path = os.environ.get("HAFVT_REAL_DATA")
    if not path:
        pytest.skip("HAFVT_REAL_DATA is not set: point it at ../shared/data/c2dsr/Food-Kitchen to run real-data tests")
    if not Path(path).is_dir():
        pytest.skip(f"HAFVT_REAL_DATA={path} is not a directory")
    return Path(path)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright (the browser tests: the book, JupyterLab)."""
    from helpers import CHROMIUM_FLAGS, chromium_or_fail
    from playwright.sync_api import sync_playwright

    exe = chromium_or_fail()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()
