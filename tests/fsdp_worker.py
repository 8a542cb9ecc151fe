"""Run by tests/test_parallel.py in a subprocess: a few stage steps with 2 CPU processes under FSDP2 (gloo).

Writes ``rank<r>.pt`` (full state dict, global step, videos seen, sections per step) into the output directory.
Usage: ``fsdp_worker.py TOY_ROOT OUT STAGE DEVICES [CKPT_DIR]`` (CKPT_DIR: save a sharded checkpoint there).
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lvg.data.datamodule import ToyWorldDataModule
from lvg.training import DirectForcingModule, TeacherForcingModule
from lvg.training.parallel import FSDPStrategy
from toy_setup import TINY_TOY, datamodule, module

MAX_GRAD_NORM = 0.05  # small enough that every step clips: the sharded-aware norm must equal the full one


class Record(L.Callback):
    def __init__(self, out: Path):
        self.out, self.videos, self.sections = out, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.videos += batch["id"]
        self.sections.append(pl_module.num_sections(batch))

    def on_train_end(self, trainer, pl_module):
        state = get_model_state_dict(pl_module, options=StateDictOptions(full_state_dict=True))
        torch.save({"state": state, "step": trainer.global_step, "videos": self.videos, "sections": self.sections,
                    "sharded": sum(isinstance(p, torch.distributed.tensor.DTensor) for p in pl_module.parameters())},
                   self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    root, out, stage, devices = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    ckpt_dir = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    ToyWorldDataModule(root=str(root), toy=TINY_TOY).prepare_data()
    cls = {"teacher": TeacherForcingModule, "direct": DirectForcingModule}[stage]
    L.seed_everything(0)
    # fp32 all-gather and reduce: the comparison with one process is exact up to summation order.
    strategy = FSDPStrategy(param_dtype=None, reduce_dtype=None, activation_checkpointing=True)
    callbacks = [Record(out)]
    if ckpt_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_last=False,
                                                             every_n_train_steps=2))
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=2, logger=False,
                        enable_checkpointing=ckpt_dir is not None, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module(cls, max_grad_norm=MAX_GRAD_NORM), datamodule(root))
