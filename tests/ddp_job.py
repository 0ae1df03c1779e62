"""A 2-process DDP (gloo, CPU) job over small synthetic shards, launched by tests/test_ddp.py through torchrun.

Records, per rank, the sample keys of every training and validation batch and the number of steps.
Usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_job.py DATA_ROOT OUT_DIR JOB
JOB: ``fit`` (resampled training, exact validation), ``fit-exact`` (two epochs of exact training over the
three uneven training shards) or ``validate-train-shards`` (an exact pass over them).
"""

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tokencompose.recipes import TokenComposeCLI  # noqa: E402


class RecordKeys(Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.train, self.val, self.epochs = out, [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.train.append(batch.keys)
        self.epochs.append(trainer.current_epoch)

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val.append(batch.keys)

    def save(self, trainer):
        record = {"train": self.train, "val": self.val, "epochs": self.epochs, "steps": trainer.global_step,
                  "world": trainer.world_size}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_fit_end(self, trainer, module):
        self.save(trainer)

    def on_validation_end(self, trainer, module):
        if trainer.state.fn == "validate":
            self.save(trainer)


def main() -> None:
    root, out, job = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    args = [
        "--config", str(REPO / "recipes/tiny/mask_llava.yaml"),
        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1", "--trainer.max_steps", "-1",
        "--trainer.check_val_every_n_epoch", "1", "--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "null",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out),
        "--data.synthetic.root", root, "--data.synthetic.train_samples", "72", "--data.synthetic.val_samples", "40",
        "--data.synthetic.samples_per_shard", "24", "--data.batch_size", "4", "--data.num_workers", "2",
        "--data.train_mode", "resampled", "--model.max_new_tokens", "1",
    ]
    if job == "validate-train-shards":
        args += ["--data.val", f"{root}/train-{{000000..000002}}.tar"]
    if job == "fit-exact":
        args += ["--data.train_mode", "exact", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0"]
    cli = TokenComposeCLI(args=args, run=False)
    cli.trainer.callbacks.append(RecordKeys(out))
    if job.startswith("fit"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    else:
        cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
