"""Train-step time of the stages on the same model and video (toy preset, CPU by default).

Direct Forcing's history is the one-step estimate of a prediction the loss needed anyway, so its
step should cost what Teacher Forcing's does (the paper's "no additional overhead"); Student
Forcing adds a k-step rollout per section. Reported (median step time, same run):

* ``direct_all / teacher``: both train every parameter -- isolates the cost of the history mechanism;
* ``direct / teacher``: Direct Forcing as configured for stage 2 (output layer only) vs stage 1;
* ``student / teacher``: Student Forcing (5 steps, all parameters) vs Teacher Forcing.

The arms run in ``--rounds`` rounds of ``--steps`` steps each, in reversed order every other round, and each
median is over all its rounds' steps: slow drifts of a shared machine's load then hit every arm alike.

    python benchmarks/stage_step_time.py [--steps 8] [--rounds 3] [--sections 6]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from lvg.models.memory_pack import MemoryPackConfig
from lvg.models.semantic_pack import SemanticPackConfig
from lvg.training import DirectForcingModule, StudentForcingModule, TeacherForcingModule


class StepTimer(L.Callback):
    def __init__(self):
        self.times, self._start = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._start)


def video_batch(sections: int, window: int = 9, size: int = 16) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "id": ["bench"],
        "latents": torch.randn(1, 12, 1 + sections * window, size, size, generator=g).clamp(-1, 1),
        "text": torch.randn(1, 24, 64, generator=g),
        "text_mask": torch.ones(1, 24, dtype=torch.bool),
        "pooled": torch.randn(1, 64, generator=g),
        "image": torch.randn(1, 16, 48, generator=g),
    }


def measure(cls, steps: int, batch: dict, **kwargs) -> list[float]:
    L.seed_everything(0)
    model = cls(dit="toy", memory_pack=MemoryPackConfig(window=9, rope_time_mode="absolute"),
                semantic_pack=SemanticPackConfig(dim=128, num_heads=4, memory_grid=(4, 4)), **kwargs)
    timer = StepTimer()
    loader = DataLoader([batch] * (steps + 1), batch_size=None)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, loader)
    return timer.times[1:]  # the first step warms up allocators and kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sections", type=int, default=6)
    args = parser.parse_args()
    batch = video_batch(args.sections)
    arms = {
        "teacher": (TeacherForcingModule, {}),
        "direct_all": (DirectForcingModule, {"trainable": "all"}),
        "direct": (DirectForcingModule, {}),
        "student": (StudentForcingModule, {"trainable": "all"}),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    for round_ in range(args.rounds):
        for name in (list(arms) if round_ % 2 == 0 else list(reversed(arms))):
            cls, kwargs = arms[name]
            times[name] += measure(cls, args.steps, batch, **kwargs)
    t = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "benchmark": "stage_step_time",
        "preset": "toy",
        "sections_per_video": args.sections,
        "steps_per_arm": args.steps * args.rounds,
        "step_s_median": t,
        "direct_all_over_teacher": t["direct_all"] / t["teacher"],
        "direct_over_teacher": t["direct"] / t["teacher"],
        "student_over_teacher": t["student"] / t["teacher"],
    }, indent=2))


if __name__ == "__main__":
    main()
