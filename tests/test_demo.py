import pytest

pytest.importorskip("nilearn", reason="the 'demo' extra is not installed")

from medtrans.cli import main  # noqa: E402


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_embedded_data(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--minutes", "0.1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "inverted + histogram-matched input" in out and "done in" in out
    for part in ("translated/test00.nii.gz", "faithfulness/test00_invented.nii.gz", "scores.csv", "montage.png",
                 "generator.pt", "baselines/histmatch/test00.nii.gz"):
        assert (tmp_path / part).exists(), part
