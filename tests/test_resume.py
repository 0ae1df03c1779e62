import warnings

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tests.recipe_utils import REPO, small_data
from tokencompose.recipes import TokenComposeCLI

RECIPE = REPO / "recipes" / "tiny" / "mask_llava.yaml"


class RecordLosses(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])


def run(root, steps: int, ckpt_dir, ckpt_path=None) -> dict[int, float]:
    args = ["--config", str(RECIPE), "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "1000",
            "--data.batch_size", "8", *small_data(root)]
    cli = TokenComposeCLI(args=args, run=False)
    recorder = RecordLosses()
    cli.trainer.callbacks += [recorder, ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=5, save_top_k=-1)]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return recorder.losses


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(synthetic_root, tmp_path):
    # 96 samples / batch 8 = 12 batches an epoch: stopping at step 15 is mid-epoch, in the second epoch.
    straight = run(synthetic_root, 20, tmp_path / "a")
    checkpoint = next((tmp_path / "a").glob("*step=15*.ckpt"))
    state = torch.load(checkpoint, weights_only=True)
    assert state["optimizer_states"] and state["lr_schedulers"] and state["global_step"] == 15
    resumed = run(synthetic_root, 20, tmp_path / "b", ckpt_path=str(checkpoint))
    assert sorted(resumed) == list(range(16, 21))
    assert [resumed[s] for s in range(16, 21)] == [straight[s] for s in range(16, 21)]


def test_resuming_mid_epoch_does_not_warn_that_the_loader_is_not_resumable(synthetic_root, tmp_path):
    """Lightning (training_epoch_loop.py) warns "your dataloader is not resumable" on a mid-epoch resume unless the
    training loader has ``state_dict``/``load_state_dict``; the data position lives there, so it must not warn."""
    run(synthetic_root, 5, tmp_path / "a")
    checkpoint = next((tmp_path / "a").glob("*step=5*.ckpt"))
    state = torch.load(checkpoint, weights_only=True)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": 5}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run(synthetic_root, 7, tmp_path / "b", ckpt_path=str(checkpoint))
    assert sorted(resumed) == [6, 7]
    assert not [w for w in caught if "not resumable" in str(w.message)]
