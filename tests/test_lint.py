"""The code is flake8 clean under the repository's settings (setup.cfg: black's 100 columns)."""

import os
import subprocess
import sys

from tests.helpers.learning import REPO

LINTED = ["projects", "pointrend", "tools", "tests", "train_net.py", "demo.py", "setup.py"]


def test_flake8_clean():
    paths = [p for p in LINTED if os.path.exists(os.path.join(REPO, p))]
    result = subprocess.run(
        [sys.executable, "-m", "flake8", *paths], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
