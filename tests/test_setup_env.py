"""tools/setup_env.py: what it refuses (old Python, no venv/pip, no disk) and how it repairs."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup_env():
    spec = importlib.util.spec_from_file_location("setup_env", REPO / "tools" / "setup_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_old_python_is_refused_with_a_message(setup_env, monkeypatch, capsys):
    monkeypatch.setattr(setup_env.sys, "version_info", (3, 8, 10))
    with pytest.raises(SystemExit):
        setup_env.check_interpreter()
    assert "Python >= 3.9 is needed" in capsys.readouterr().err


def test_missing_venv_module_is_refused(setup_env, monkeypatch, capsys):
    monkeypatch.setattr(setup_env, "works", lambda python, code: "venv" not in code)
    with pytest.raises(SystemExit):
        setup_env.check_interpreter()
    assert "python3-venv" in capsys.readouterr().err


def test_no_disk_space_is_refused(setup_env, tmp_path, capsys):
    with pytest.raises(SystemExit):
        setup_env.check_disk(tmp_path / "not" / "yet" / "created", need_gb=1e9)
    err = capsys.readouterr().err
    assert "GB free under" in err and str(tmp_path) in err


def test_interrupted_or_outdated_setup_is_not_complete(setup_env, tmp_path):
    stamp = tmp_path / setup_env.STAMP_NAME
    python = sys.executable  # imports detectron2 and projects: a working environment
    assert not setup_env.is_complete(stamp, python, "abc")  # interrupted: no stamp written
    stamp.write_text("{not json")
    assert not setup_env.is_complete(stamp, python, "abc")  # half-written stamp
    stamp.write_text(json.dumps({"inputs": "old"}))
    assert not setup_env.is_complete(stamp, python, "abc")  # inputs changed since
    stamp.write_text(json.dumps({"inputs": "abc"}))
    assert setup_env.is_complete(stamp, python, "abc")
    assert not setup_env.is_complete(stamp, tmp_path / "no-python", "abc")  # env broken since


def test_broken_venv_is_recreated(setup_env, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("not an interpreter")
    setup_env.ensure_venv(venv, venv / "bin" / "python")
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import pip, sys; print(sys.prefix != sys.base_prefix)",
        ],
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "True"


def test_inputs_hash_changes_with_the_torch_spec(setup_env, monkeypatch):
    first = setup_env.inputs_hash()
    monkeypatch.setenv("TORCH_SPEC", "torch==0.0.0")
    assert setup_env.inputs_hash() != first
