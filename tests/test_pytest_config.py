"""pytest.ini's warning filters: deprecation and future warnings show in the summary when project
code is their source and stay hidden when a third-party module is."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each warning is raised by code whose module ``__name__`` is the one named (what the filters'
# module regex is matched against, as for code in a real module of that name).
PROBES = {
    "projects.data.probe": ("DeprecationWarning", True),
    "pointrend.probe": ("FutureWarning", True),
    "blendmask.config": ("DeprecationWarning", True),
    "tests.helpers.probe": ("DeprecationWarning", True),
    "train_net": ("FutureWarning", True),
    "detectron2.projects.point_rend": ("DeprecationWarning", False),
    "fvcore.nn.focal_loss": ("FutureWarning", False),
    "projectsx.probe": ("DeprecationWarning", False),
}


def test_project_deprecations_show_and_third_party_ones_do_not(tmp_path):
    body = ["import warnings", "", "", "def test_probes():"]
    for module, (category, _) in PROBES.items():
        code = f"import warnings; warnings.warn('probe from {module}', {category})"
        body.append(f"    exec({code!r}, {{'__name__': {module!r}}})")
    probe = tmp_path / "test_probe.py"
    probe.write_text("\n".join(body) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(probe), "-c", str(REPO / "pytest.ini")]
        + ["-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for module, (category, shown) in PROBES.items():
        line = f"{category}: probe from {module}\n"
        assert (line in result.stdout) == shown, f"{module}: shown={not shown}\n{result.stdout}"
