"""Progress a log file can show: plain lines when stdout is not a terminal, a bar without v_num when it is."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from tests.recipe_utils import REPO, small_data
from tokencompose.callbacks import (
    LogProgress,
    TerminalProgressBar,
    default_progress_bar,
    with_default_progress,
)
from tokencompose.progress import LineMeter
from tokencompose.trainer import Trainer

TRAIN_LINE = re.compile(r"^train step \d+/4 \| epoch \d+ \| loss \d+\.\d{4} \| \d+\.\d+ samples/s \| elapsed \S+ \| ETA \S+$")


def test_a_fit_piped_to_a_file_prints_step_loss_speed_and_eta(synthetic_root):
    """The real command, stdout a pipe (as under SLURM or CI): lines, no bar."""
    args = ["--config", "recipes/tiny/mask_llava.yaml", *small_data(synthetic_root), "--trainer.max_steps", "4",
            "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"]
    out = subprocess.run([sys.executable, "-m", "tokencompose", "fit", *args], capture_output=True, text=True,
                         timeout=600, cwd=REPO, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    train = [line for line in lines if TRAIN_LINE.match(line)]
    assert train and train[-1].startswith("train step 4/4"), out.stdout[-3000:]
    assert any(line.startswith("validation at step 2 | val") for line in lines), out.stdout[-3000:]
    assert "\r" not in out.stdout and "v_num" not in out.stdout and "/-2" not in out.stdout


def test_a_line_meter_writes_the_first_and_last_update_and_one_per_interval():
    stream = io.StringIO()
    with LineMeter(5, "eval pope", unit="sample", interval_s=3600, stream=stream) as progress:
        for _ in range(5):
            progress.update(1)
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["eval pope: 1/5 sample", "eval pope: 5/5 sample"]
    assert "sample/s" in lines[-1] and "ETA 0:00:00" in lines[-1]
    every = io.StringIO()
    meter = LineMeter(None, "stream", interval_s=1e-9, stream=every)
    for _ in range(3):
        meter.update(2)
    assert every.getvalue().count("\n") == 3 and "6/? it" in every.getvalue() and "ETA" not in every.getvalue()


def test_the_default_is_chosen_by_the_terminal_and_never_overrides_the_recipe(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(default_progress_bar(), LogProgress)
    checkpoint = ModelCheckpoint()
    assert [type(c) for c in with_default_progress(checkpoint, None)] == [ModelCheckpoint, LogProgress]
    assert with_default_progress([checkpoint], False) == [checkpoint]  # progress off: nothing added
    given = TQDMProgressBar()
    assert with_default_progress([given], None) == [given]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    bar = default_progress_bar()
    assert isinstance(bar, TerminalProgressBar) and not isinstance(bar, RichProgressBar)  # rich writes Epoch 9/-2


def test_the_terminal_bar_hides_the_logger_version(tmp_path):
    trainer = Trainer(logger=CSVLogger(tmp_path), callbacks=[TerminalProgressBar()], max_steps=1,
                      enable_checkpointing=False)
    assert "v_num" in TQDMProgressBar().get_metrics(trainer, None)  # what Lightning's own bar shows
    assert "v_num" not in trainer.progress_bar_callback.get_metrics(trainer, None)


def test_log_progress_refuses_a_non_positive_interval():
    with pytest.raises(ValueError, match="interval_s=0"):
        LogProgress(interval_s=0)
