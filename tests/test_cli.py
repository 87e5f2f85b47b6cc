import os
import subprocess
import sys

import medtrans
from medtrans.commands.cli import main


def test_version_and_help_exit_codes(capsys):
    assert main([]) == 2
    assert "usage: medtrans" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "medtrans", "--version"], capture_output=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == f"medtrans {medtrans.__version__}"


def test_nifti_work_needs_neither_torchio_nor_simpleitk(tmp_path, synthetic_brains):
    """A GPU machine may lack both (SimpleITK's wheel alone is ~52 MB): training and translating NIfTI files must not
    import them (only resampling and DICOM do)."""
    from tests.conftest import REPO, synthetic_domains

    a, b = synthetic_domains(tmp_path, synthetic_brains)
    script = f"""
import sys
sys.modules["torchio"] = None       # importing either now raises ImportError
sys.modules["SimpleITK"] = None
from medtrans.commands.cli import main
assert main(["train", "--method", "nec", "--data-a", "{a}", "--data-b", "{b}", "--output", "{tmp_path / 'run'}",
             "--patch-size", "48", "48", "48", "--iterations", "2", "--tracking", "none", "--no-progress"]) == 0
assert main(["translate", "{a / 's1.nii'}", "{tmp_path / 'out.nii.gz'}", "--model", "{tmp_path / 'run' / 'generator.pt'}",
             "--no-progress"]) == 0
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="utf-8", cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out.nii.gz").exists()


def test_help_does_not_load_torch_and_shows_defaults():
    """Every command's help prints on an ASCII-only terminal (LC_ALL=C without UTF-8 mode) without importing torch."""
    script = ("import sys\nfrom medtrans.commands.cli import build_parser, main\nparser = build_parser()\n"
              "assert 'torch' not in sys.modules, 'the command line imported torch'\n"
              "for command in ('demo', 'translate', 'evaluate', 'train'):\n"
              "    try:\n        main([command, '--help'])\n    except SystemExit as done:\n"
              "        assert done.code == 0, (command, done.code)\n"
              "assert 'torch' not in sys.modules, 'help imported torch'\n")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, encoding="ascii", env=env)
    assert done.returncode == 0, done.stderr
    assert "total iterations (default: 20000)" in done.stdout and "(default: 1000)" in done.stdout
    assert "default 64 64 64 (3D) or 128 128 1 (2D)" in done.stdout
