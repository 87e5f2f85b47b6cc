import subprocess
import sys

import medtrans
from medtrans.cli import main


def test_version_and_help_exit_codes(capsys):
    assert main([]) == 2
    assert "usage: medtrans" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "medtrans.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"medtrans {medtrans.__version__}"
