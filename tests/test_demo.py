import platform
from datetime import datetime, timezone

from tests.recipe_utils import small_data
from tokencompose.cli import main
from tokencompose.eval.report import format_table, provenance, summarise


def test_demo_trains_both_schemes_and_prints_the_table(synthetic_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from any directory: the recipes are the package's own
    out = tmp_path / "table.md"
    main(["demo", "--steps", "3", "--out", str(out),
          *small_data(synthetic_root), "--trainer.val_check_interval", "1000"])
    table = out.read_text()
    assert "Mask-LLaVA" in table and "LLaVA-1.5" in table
    rows = [line for line in table.splitlines() if line.startswith("| Mask") or line.startswith("| LLaVA")]
    assert rows[0].split("|")[2].strip().endswith("(11)") and rows[1].split("|")[2].strip() == "64.0 (64)"
    printed = capsys.readouterr().out
    header, _, written = table.partition("\n\n")  # the file is what was printed: the provenance line, the table
    assert header in printed and written.strip() in printed
    assert header.startswith("Measured by `tokencompose demo --trainer.max_steps 3 ") and " UTC; machine: " in header
    assert datetime.now(timezone.utc).strftime("%Y-%m-%d") in header and f"Python {platform.python_version()}" in header


def test_the_provenance_line_names_command_date_and_machine():
    line = provenance("tokencompose demo", datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc))
    assert line.startswith("Measured by `tokencompose demo` on 2026-03-04 05:06 UTC; machine: ")
    assert " cores" in line and "torch " in line


def test_summary_counts_per_question_type():
    records = [
        {"prediction": "Yes", "answer": "yes", "question_type": "presence", "visual_tokens": 7, "seconds": 0.01},
        {"prediction": "no", "answer": "yes", "question_type": "presence", "visual_tokens": 9, "seconds": 0.03},
        {"prediction": "red ", "answer": "red", "question_type": "color", "visual_tokens": 8, "seconds": 0.02},
    ]
    result = summarise("s", 11, records)
    assert result.accuracy == {"presence": 0.5, "color": 1.0, "all": 2 / 3}
    assert result.mean_visual_tokens == 8 and abs(result.ms_per_sample - 20) < 1e-9
    assert "| s | 8.0 (11) | 100.0 | 50.0 | 66.7 | 20.00 |" in format_table([result])
