"""The make_metadata command (ls.data.make_metadata)."""

from __future__ import annotations

import pandas as pd
import pytest

from ls.data.make_metadata import main


@pytest.mark.shared_data
def test_make_metadata_on_the_real_sample_equals_the_authors_rows(
    icbhi_sample_dir, icbhi_meta_dir, tmp_path, capsys
):
    out = tmp_path / "icbhi_metadata.csv"
    rc = main(["--data-folder", str(icbhi_sample_dir), "--out", str(out),
               "--fold-file", str(icbhi_meta_dir / "patient_list_foldwise.txt")])  # fmt: skip
    assert rc == 0
    written = pd.read_csv(out)
    reference = pd.read_csv(icbhi_meta_dir / "icbhi_metadata.csv")
    expected = reference[reference["Filename"].isin(set(written["Filename"]))].reset_index(drop=True)
    assert written["Filename"].nunique() == 10
    pd.testing.assert_frame_equal(written, expected)  # all 17 columns, NaNs included
    printed = capsys.readouterr().out
    assert "97 cycles, 10 recordings, 4 patients" in printed and f"wrote {out}" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icbhi_metadata.csv"]  # atomic: no temp file left


def test_make_metadata_reports_a_missing_folder(tmp_path, capsys):
    assert main(["--data-folder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_make_metadata_defaults_to_the_data_folder(synthetic_icbhi_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(synthetic_icbhi_dir, folder)
    assert main(["--data-folder", str(folder), "--no-check-audio"]) == 0
    table = pd.read_csv(folder / "icbhi_metadata.csv")
    assert len(table) > 0 and set(table["Split"]) == {"train", "test"}
    assert "cycles per device" in capsys.readouterr().out
