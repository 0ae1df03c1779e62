"""A tiny LLaVA-1.5 stage-2 recipe, data-parallel with activation checkpointing, gloo on CPU; launched by
tests/test_multinode.py.

Not FSDP: Lightning 2.6.6 refuses its FSDPStrategy on a CPU accelerator ("The strategy `fsdp` requires a GPU
accelerator", lightning/pytorch/trainer/connectors/accelerator_connector.py, _check_strategy_and_fallback), so the
stage-2 strategy cannot run here; DDP (gloo) with the LLM's own activation checkpointing is what runs.

Usage: JOB OUT fit | resume CKPT | resume-and-single CKPT   (under torchrun; the last one with one process)

The data is a fixed list of synthetic samples in a map-style dataset: rank r reads the samples
r, r + W, r + 2W, ... (DistributedSampler, no shuffle), so a step over W ranks x B samples sees the same global
batch as one process with batch W x B. Records per rank: the steps run, each step's loss and target-token count,
and a digest of the full model state (gathered from the FSDP shards).
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import raw_samples  # noqa: E402
from tokencompose.data.processing import Collator, ImageTransform, SampleProcessor  # noqa: E402
from tokencompose.recipes import load_recipe  # noqa: E402

GLOBAL_BATCH, STEPS = 4, 3


class Record(Callback):
    def __init__(self) -> None:
        self.losses, self.targets, self.keys, self.start_digest = [], [], [], None

    def on_train_start(self, trainer, module):  # after a checkpoint's weights are restored, before any step
        self.start_digest = state_digest(trainer)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.targets.append(int((batch.labels[:, 1:] != -100).sum()))
        self.keys.append(list(batch.keys))


def state_digest(trainer: Trainer) -> str:
    """sha256 over the full model state in key order."""
    state = trainer.strategy.lightning_module_state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def run(out: Path, name: str, world_nodes: tuple[int, int] | None, ckpt: str | None = None) -> None:
    seed_everything(0)
    model = load_recipe([REPO / "recipes/tiny/llava15_stage2.yaml"], {
        "model.init_weights": "null", "model.llm.init_args.gradient_checkpointing": "true"})
    encoder = model.encoder
    processor = SampleProcessor(ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std),
                                model.conversation_encoder(training=True))
    samples = [processor(s) for s in raw_samples(GLOBAL_BATCH * STEPS)]
    devices, nodes = world_nodes or (1, 1)
    world = devices * nodes
    # our own sampler: Lightning's replacement shuffles every training sampler (data_connector._process_dataloader)
    sampler = DistributedSampler(samples, num_replicas=world, rank=int(os.environ.get("RANK", 0)), shuffle=False)
    loader = DataLoader(samples, batch_size=GLOBAL_BATCH // world, sampler=sampler,
                        collate_fn=Collator(pad_token_id=model.llm.text_tokenizer.pad_token_id))
    strategy = "ddp" if world_nodes else "auto"
    record = Record()
    trainer = Trainer(accelerator="cpu", devices=devices, num_nodes=nodes, strategy=strategy, precision="32-true",
                      max_steps=STEPS + (1 if ckpt else 0), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False, callbacks=[record], default_root_dir=str(out))
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt)
    digest = state_digest(trainer)
    if name == "fit":
        trainer.save_checkpoint(out / "fit.ckpt")  # collective; rank 0 writes one file any world size reads
    rank = trainer.global_rank
    (out / f"{name}-rank{rank}.json").write_text(json.dumps({
        "world": trainer.world_size, "steps": trainer.global_step, "losses": record.losses,
        "targets": record.targets, "keys": record.keys, "digest": digest, "start_digest": record.start_digest, "node": int(os.environ.get("GROUP_RANK", 0)),
    }))


def main() -> None:
    out, job = Path(sys.argv[1]), sys.argv[2]
    shape = (int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"]) // int(os.environ["LOCAL_WORLD_SIZE"]))
    run(out, "resume" if job.startswith("resume") else job, shape, sys.argv[3] if job.startswith("resume") else None)
    if job == "resume-and-single":  # the same process, no process group: one process, the whole global batch
        torch.distributed.destroy_process_group()
        run(out, "single", None)
        return
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
