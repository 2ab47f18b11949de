"""The UI's own unit tests (vitest + jsdom: the API client and the views) run with the Python
suite, so the README's one test command covers them too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VITEST = ROOT / "node_modules" / ".bin" / "vitest"


def test_vitest():
    if not VITEST.exists():
        pytest.fail("node_modules is missing: run scripts/bootstrap (npm ci)")
    proc = subprocess.run([str(VITEST), "run", "--reporter=dot"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CI": "1", "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
