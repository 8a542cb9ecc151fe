"""Run by tests/test_training.py in a subprocess: a few stage steps with 2 CPU processes (gloo DDP).

Writes ``rank<r>.pt`` (final state dict, global step, videos seen) into the output directory.
"""

import sys
from pathlib import Path

import lightning as L
import torch

from lvg.data.datamodule import ToyWorldDataModule
from lvg.training import DirectForcingModule, TeacherForcingModule
from toy_setup import TINY_TOY, datamodule, module


class Record(L.Callback):
    def __init__(self, out: Path):
        self.out, self.videos = out, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.videos += batch["id"]

    def on_train_end(self, trainer, pl_module):
        torch.save({"state": pl_module.state_dict(), "step": trainer.global_step, "videos": self.videos},
                   self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    root, out, stage, devices = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ToyWorldDataModule(root=str(root), toy=TINY_TOY).prepare_data()
    cls = {"teacher": TeacherForcingModule, "direct": DirectForcingModule}[stage]
    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Record(out)])
    trainer.fit(module(cls), datamodule(root))
