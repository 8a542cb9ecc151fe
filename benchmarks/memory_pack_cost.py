"""Per-section cost of MemoryPack vs a full-history baseline (toy preset, CPU by default).

Per-section cost = build the context + one DiT forward + the psi update after the section.
MemoryPack (FramePack 1x/2x/4x packing + SemanticPack) should cost the same at section 200 as at
section 1; the baseline that feeds every past latent at 1x (no compression, no memory) grows with
the video. The baseline is measured up to ``--baseline-sections`` (its attention is quadratic).

    python benchmarks/memory_pack_cost.py [--device cuda] [--reps 5]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.models.semantic_pack import SemanticPack, SemanticPackConfig

LATENT = 16  # toy world 32x32 px -> 16x16 latents (space-to-depth by 2)


def median_time(fn, reps: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 200])
    parser.add_argument("--baseline-sections", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    cfg = DiTConfig.from_name("toy")
    dit = PackedDiT(cfg).to(device).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.02)
    sp = SemanticPack(SemanticPackConfig(dim=128, num_heads=4), cfg).to(device).eval()
    mp = MemoryPackConfig(window=9)
    c = cfg.in_channels

    def r(*shape):
        return torch.randn(*shape, device=device)

    cond = {"text": r(1, 32, cfg.text_embed_dim), "text_mask": torch.ones(1, 32, device=device),
            "pooled": r(1, cfg.pooled_projection_dim), "image": r(1, 16, cfg.image_proj_dim)}
    common = {"timestep": torch.tensor([700.0], device=device), "guidance": torch.tensor([10000.0], device=device)}
    x, section_latents = r(1, c, mp.window, LATENT, LATENT), r(1, c, mp.window, LATENT, LATENT)

    # MemoryPack: advance one state to each measured section; the measured step is not kept.
    state = MemoryPackState(mp, r(1, c, 1, LATENT, LATENT), semantic_pack=sp, **cond)
    memory_pack = {}
    with torch.no_grad():
        for target in sorted(args.sections):
            while state.section < target:
                state.update(section_latents)
            snapshot = state.state_dict()

            def step(snapshot=snapshot):
                dit(hidden_states=x, **common, **state.context())
                state.update(section_latents)
                state.load_state_dict(snapshot)

            memory_pack[target] = median_time(step, args.reps, device)

    # Baseline: [start, every past latent] at 1x with their true indices; no 2x/4x, no psi.
    baseline = {}
    with torch.no_grad():
        for n in sorted(args.baseline_sections):
            history = r(1, c, 1 + n * mp.window, LATENT, LATENT)
            indices = torch.arange(history.shape[2], device=device)

            def step(history=history, indices=indices):
                dit(hidden_states=x, **common, encoder_hidden_states=cond["text"],
                    encoder_attention_mask=cond["text_mask"], pooled_projections=cond["pooled"],
                    image_embeds=cond["image"], latents_clean=history, indices_latents_clean=indices,
                    indices_latents=torch.arange(history.shape[2], history.shape[2] + mp.window, device=device))

            baseline[n] = median_time(step, args.reps, device)

    first, last = min(memory_pack), max(memory_pack)
    b_first, b_last = min(baseline), max(baseline)
    print(json.dumps({
        "benchmark": "memory_pack_cost",
        "device": str(device),
        "preset": "toy",
        "latent_hw": LATENT,
        "window": mp.window,
        "memory_pack_s_per_section": memory_pack,
        f"memory_pack_ratio_section{last}_over_section{first}": memory_pack[last] / memory_pack[first],
        "full_history_s_per_section": baseline,
        f"full_history_ratio_section{b_last}_over_section{b_first}": baseline[b_last] / baseline[b_first],
        f"full_history_section{b_last}_over_memory_pack_section{first}": baseline[b_last] / memory_pack[first],
    }, indent=2))


if __name__ == "__main__":
    main()
