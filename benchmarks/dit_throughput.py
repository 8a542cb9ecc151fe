"""PackedDiT forward+backward throughput as model-FLOPs utilisation (MFU) on this machine.

MFU = (model FLOPs of one fwd+bwd step / step time) / (dense matmul FLOP/s measured in the same run),
so the figure is comparable across noisy shared machines. Model FLOPs are counted by
``torch.utils.flop_counter`` (matmuls, convolutions, attention), not estimated by hand.
Inputs follow the F1 layout: a 9-frame window plus 16/2/1 history frames and the start latent.

    python benchmarks/dit_throughput.py [--device cuda --dtype bfloat16] [--steps 5] [--gradient-checkpointing]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from lvg.config import DiTConfig
from lvg.models.dit import HISTORY_KERNELS, PackedDiT

CONFIGS = {
    "toy": (DiTConfig.from_name("toy"), 16),  # (config, latent height = width)
    "cpu-large": (
        DiTConfig.from_name(
            "toy", num_attention_heads=8, attention_head_dim=64, rope_axes_dim=(16, 24, 24),
            num_layers=4, num_single_layers=8,
        ),
        16,
    ),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def f1_inputs(cfg: DiTConfig, size: int, device: torch.device, dtype: torch.dtype, window: int = 9) -> dict:
    def r(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    c = cfg.in_channels
    return {
        "hidden_states": r(1, c, window, size, size),
        "timestep": torch.tensor([700.0], device=device),
        "encoder_hidden_states": r(1, 32, cfg.text_embed_dim),
        "encoder_attention_mask": torch.ones(1, 32, device=device),
        "pooled_projections": r(1, cfg.pooled_projection_dim),
        "image_embeds": r(1, 16, cfg.image_proj_dim),
        "guidance": torch.tensor([10000.0], device=device),
        "indices_latents": torch.arange(20, 20 + window, device=device),
        "latents_clean": r(1, c, 2, size, size),
        "indices_latents_clean": torch.tensor([0, 19], device=device),
        "latents_history_2x": r(1, c, 2, size, size),
        "indices_latents_history_2x": torch.tensor([17, 18], device=device),
        "latents_history_4x": r(1, c, 16, size, size),
        "indices_latents_history_4x": torch.arange(1, 17, device=device),
    }


def video_tokens(inputs: dict) -> int:
    """Tokens of the video stream: noisy window and 1x history at patch 2, 2x/4x history compressed."""
    total = 0
    for key, scale in (("hidden_states", "1x"), ("latents_clean", "1x"), ("latents_history_2x", "2x"),
                       ("latents_history_4x", "4x")):
        total += math.prod(-(-n // k) for n, k in zip(inputs[key].shape[2:], HISTORY_KERNELS[scale]))
    return total


def step(model: PackedDiT, inputs: dict) -> None:
    model(**inputs).float().square().mean().backward()


def random_dit(cfg: DiTConfig, device: torch.device, dtype: torch.dtype) -> PackedDiT:
    """A PackedDiT with N(0, 0.02) weights in ``dtype``: adaLN-Zero init would make every block the identity
    and most matmuls trivially cheap to differentiate. Built on ``device``, where a 1B model initialises in
    a fraction of the seconds it takes on the CPU."""
    with torch.device(device):
        model = PackedDiT(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return model.to(dtype)


def measure(
    name: str, cfg: DiTConfig, size: int, device, dtype, steps: int, peak: float, gradient_checkpointing: bool = False,
) -> dict:
    torch.manual_seed(0)
    model = random_dit(cfg, device, dtype)
    inputs = f1_inputs(cfg, size, device, dtype)
    # FLOPs of the model, counted without checkpointing: its recomputed forward is overhead, not model work (MFU).
    with FlopCounterMode(display=False) as counter:
        step(model, inputs)
    flops = counter.get_total_flops()
    model.gradient_checkpointing = gradient_checkpointing
    step(model, inputs)  # warm-up
    sync(device)
    times = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step(model, inputs)
        sync(device)
        times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    return {
        "name": name,
        "gradient_checkpointing": gradient_checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "video_tokens": video_tokens(inputs),
        "flops_per_step": flops,
        "step_s_median": step_s,
        "achieved_flops_per_s": flops / step_s,
        "mfu": flops / step_s / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations in backward")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    peak = matmul_flops_per_s(device, dtype)
    results = [measure(name, cfg, size, device, dtype, args.steps, peak, args.gradient_checkpointing)
               for name, (cfg, size) in CONFIGS.items()]
    print(json.dumps({
        "benchmark": "dit_throughput",
        "device": str(device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "matmul_flops_per_s": peak,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
