"""The prepared GPU check: every CUDA path of lvg exercised and measured in one run on one 80 GB GPU.

Checks (each wrapped: one that fails records ``{"error": ...}`` and the others still run):

* ``cuda_tests``: ``pytest -m cuda`` (tests/test_cuda.py) in a subprocess: passed / failed / skipped;
* ``bf16_vs_fp32``: PackedDiT forward error of bf16 against fp32 (TF32 off) at the debug preset and a
  1B-class config (FramePack-F1 width, 2 dual + 4 single blocks, 1.66B parameters), F1-layout inputs;
* ``sdpa_path``: the scaled-dot-product-attention kernels the profiler sees in the 1B config's bf16 forward;
* ``offload``: one section (UniPC, 25 steps, MemoryPackState with F1 history) sampled with the 1B model
  resident and with its blocks offloaded (prefetch on a side stream): bit-identical latents, both times;
* ``mfu``: fwd+bwd MFU of the 1B config in bf16 with gradient checkpointing, against the dense bf16 matmul
  rate measured in the same run (benchmarks/dit_throughput.py);
* ``f1_generate``: the full FramePack-F1 architecture (random weights, built on meta, materialised in bf16
  on the GPU) generating one 480p section (latent 60x104, window 9) with 25 steps: seconds per step and per
  output frame, peak memory against ``lvg plan --mode generate``;
* ``stage2_memory``: one stage-2 step (configs/framepack_f1/stage2.yaml: Direct Forcing, output layer trained,
  frozen weights bf16, trained fp32) over two sections: peak memory against ``lvg plan``.

    python benchmarks/gpu_check.py            # one CUDA GPU (80 GB), under 8 minutes on an H100 / H200
    python benchmarks/gpu_check.py --dry-run  # the same code at tiny size on the CPU (tests/test_benchmark.py)

Prints one JSON object (versions, per-check results and wall times) on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from lvg.cli.configs import build_model
from lvg.cli.lightning import LvgCLI
from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.models.semantic_pack import SemanticPack
from lvg.plan import IMAGE_TOKENS, TEXT_TOKENS
from lvg.sampling.offload import enable_block_offload
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from lvg.training.base import StageModule

sys.path.insert(0, str(Path(__file__).parent))
import dit_throughput  # a sibling script, not a package

ROOT = Path(__file__).parents[1]
GIB = 1024**3
T = TypeVar("T")

ONE_B = DiTConfig.from_name("framepack-f1", num_layers=2, num_single_layers=4)
"""FramePack-F1's width and embedders with 6 of its 60 blocks: 1.66B parameters, the same kernels per block."""

SUBPROCESS_TIMEOUT_S = 300
"""Limit of the pytest and ``lvg plan`` subprocesses (they take 10-30 s)."""


@dataclass(frozen=True)
class Sizes:
    """What the checks run at: the full run on one GPU, or the dry run on the CPU."""

    device: str
    cuda_test_paths: tuple[str, ...]
    """Where ``pytest -m cuda`` looks (empty: the whole suite; the dry run spares the ~10 s of collecting it)."""
    precision_configs: dict[str, tuple[DiTConfig, int]]
    """bf16_vs_fp32: name -> (config, latent height = width of :func:`dit_throughput.f1_inputs`)."""
    large_name: str
    """Name of :attr:`large` in the results."""
    large: DiTConfig
    """sdpa_path, offload and mfu: the 1B-class config."""
    large_side: int
    """Latent height = width of the f1_inputs for sdpa_path and mfu (80: 18.4k video tokens, about 480p's 18k)."""
    matmul_n: int
    """Side of the square matmuls that measure the peak FLOP/s."""
    mfu_steps: int
    """Timed fwd+bwd steps (the median is used)."""
    f1_preset: str
    """f1_generate: the DiT preset, also passed to ``lvg plan --model``."""
    latent: tuple[int, int]
    """Latent height and width of offload, f1_generate and stage2_memory (480p: 60 x 104)."""
    steps: int
    """Sampling steps of one section (offload and f1_generate)."""
    frames_per_latent: int
    """Output frames a latent frame decodes to (HunyuanVideo VAE: 4, the toy PixelCodec: 1)."""
    stage2_config: Path | None
    """stage2_memory's config; None: the toy-size equivalent the dry run writes (:data:`DRY_STAGE2`)."""
    stage2_frozen_dtype: torch.dtype
    """dtype of stage 2's frozen weights: bf16 as in a real run; fp32 in the dry run, since CPU autocast has no
    fp32 policy for layer_norm and fails on fp32 activations meeting bf16 norm weights (CUDA's casts both)."""


FULL = Sizes(
    device="cuda", cuda_test_paths=(),
    precision_configs={"debug": (DiTConfig.from_name("debug"), 16), "f1-1b": (ONE_B, 80)},
    large_name="f1-1b", large=ONE_B, large_side=80, matmul_n=8192, mfu_steps=5,
    f1_preset="framepack-f1", latent=(60, 104), steps=25, frames_per_latent=4,
    stage2_config=ROOT / "configs/framepack_f1/stage2.yaml", stage2_frozen_dtype=torch.bfloat16,
)
DRY = Sizes(
    device="cpu", cuda_test_paths=("tests/test_cuda.py",),
    precision_configs={"debug": (DiTConfig.from_name("debug"), 16), "toy": (DiTConfig.from_name("toy"), 16)},
    large_name="toy", large=DiTConfig.from_name("toy"), large_side=16, matmul_n=256, mfu_steps=2,
    f1_preset="toy", latent=(16, 16), steps=2, frames_per_latent=1,
    stage2_config=None, stage2_frozen_dtype=torch.float32,
)
DRY_STAGE2 = {
    "trainer": {"devices": 1, "precision": "bf16-mixed"},
    "model": {
        "class_path": "lvg.training.DirectForcingModule",
        "init_args": {
            "dit": "toy",
            "memory_pack": {"window": 9, "rope_time_mode": "absolute"},
            "semantic_pack": {"enabled": True, "dim": 64, "num_heads": 4, "memory_grid": [4, 4]},
            "lr": 1.0e-5,
            "trainable": "output_layer",
        },
    },
    "data": {"class_path": "lvg.data.datamodule.ToyWorldDataModule"},  # a config lvg fit would accept
}
"""configs/framepack_f1/stage2.yaml's model at toy size (the dry run's stage2_memory)."""

SDPA_OPS = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
}
"""The op F.scaled_dot_product_attention dispatches to, per backend: what decides the kernel."""
ATTENTION_KERNEL = re.compile(r"flash|fmha|attention|attn|sdpa", re.IGNORECASE)
FP32_INPUTS = ("timestep", "guidance", "encoder_attention_mask")
"""Inputs f1_inputs keeps in fp32 at any dtype, as every caller passes them (bf16 would round 700 to 704)."""


# --- measuring -------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall time, the device's queued work included on both ends."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def reset_peak(device: torch.device) -> None:
    """Start a peak-memory window: what earlier checks left in the allocator's cache is released first."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since :func:`reset_peak` (None on the CPU, which has no such counter)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / GIB


@contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32 (cuDNN allows it for convolutions by default): a true reference."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Background:
    """A subprocess started now and read later. Its output goes to files: an unread pipe that fills would
    block it. ``lvg plan`` runs with the GPU hidden: it needs none and would otherwise hold a CUDA context."""

    def __init__(self, args: list[str], gpu: bool):
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115 -- read in wait()
        env = None if gpu else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        self.args = args
        self.process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=self.out, stderr=self.err, env=env)

    def wait(self) -> tuple[int, str, str]:
        """Exit status, stdout and stderr; a subprocess past :data:`SUBPROCESS_TIMEOUT_S` is killed."""
        try:
            rc = self.process.wait(SUBPROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        self.out.seek(0)
        self.err.seek(0)
        return rc, self.out.read(), self.err.read()

    def plan(self) -> dict[str, Any]:
        """The ``lvg plan --json`` figures in GiB, or ``{"error": ...}``: a failed plan leaves the measurement."""
        rc, out, err = self.wait()
        if rc != 0:
            return {"error": f"{' '.join(self.args)} exited {rc}: {err[-2000:]}"}
        plan = json.loads(out)
        return {
            "total_gib": plan["total"] / GIB, "weights_gib": plan["weights"] / GIB,
            "activations_gib": plan["activations"] / GIB, "params_total": plan["params_total"],
            "tokens": plan["tokens"], "notes": plan["notes"],
        }


def against_plan(peak: float | None, plan: dict[str, Any]) -> float | None:
    """Measured peak / planned total (None without either)."""
    return peak / plan["total_gib"] if peak is not None and "total_gib" in plan else None


# --- models and inputs ------------------------------------------------------------------------------


def materialise(module: nn.Module, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> None:
    """Allocate a meta-built ``module`` (a PackedDiT, or a stage module holding one and maybe a SemanticPack)
    in ``dtype`` on ``device`` and initialise it there, so a 13B model never exists in fp32: each model's own
    init, then N(0, 0.02) for the DiT's blocks (adaLN-Zero would make every block the identity)."""
    module.to(dtype).to_empty(device=device)
    for m in module.modules():
        if isinstance(m, (PackedDiT, SemanticPack)):
            m.initialize_weights()
    for block in module.modules():
        if isinstance(block, PackedDiT.block_types):
            for p in block.parameters():
                nn.init.normal_(p, std=0.02)


def conditioning(
    cfg: DiTConfig, latent: tuple[int, int], device: torch.device, dtype: torch.dtype,
) -> dict[str, Tensor]:
    """Random start latent and text / pooled / image features at the lengths ``lvg plan`` assumes (512 text
    tokens, all valid, and 729 image tokens), from a fixed CPU generator."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype)

    return {
        "start": r(1, cfg.in_channels, 1, *latent), "text": r(1, TEXT_TOKENS, cfg.text_embed_dim),
        "text_mask": torch.ones(1, TEXT_TOKENS, dtype=torch.bool, device=device),
        "pooled": r(1, cfg.pooled_projection_dim), "image": r(1, IMAGE_TOKENS, cfg.image_proj_dim),
    }


def f1_state(cfg: DiTConfig, latent: tuple[int, int], device: torch.device) -> MemoryPackState:
    """FramePack-F1's memory (window 9, 16/2/1 history, relative RoPE, no SemanticPack) after one random
    section, so the history slots hold values rather than the zeros of a first section."""
    memory = MemoryPackConfig()
    inputs = conditioning(cfg, latent, device, torch.bfloat16)
    state = MemoryPackState(memory, inputs.pop("start"), **inputs)
    g = torch.Generator().manual_seed(1)
    state.update(torch.randn(1, cfg.in_channels, memory.window, *latent, generator=g).to(device, torch.bfloat16))
    return state


def errors(out: Tensor, ref: Tensor) -> dict[str, float]:
    diff = out.double() - ref.double()
    return {
        "max_abs_over_max_ref": float(diff.abs().max() / ref.double().abs().max()),
        "relative_rms": float(diff.square().mean().sqrt() / ref.double().square().mean().sqrt()),
    }


# --- checks -------------------------------------------------------------------------------------------


def check_cuda_tests(tests: Background) -> dict[str, Any]:
    rc, out, err = tests.wait()
    summary = [line for line in out.splitlines() if re.search(r" in [\d.]+s", line)]
    # "1 error" / "2 errors": singular keys; the count is reported as "errors" ("error" means a failed check).
    counts = {kind.rstrip("s"): int(n) for n, kind in re.findall(r"(\d+) (\w+)", summary[-1] if summary else "")}
    result: dict[str, Any] = {k: counts.get(k, 0) for k in ("passed", "failed", "skipped", "deselected")}
    result["errors"] = counts.get("error", 0)
    result["returncode"] = rc
    if rc != 0:
        result["failures"] = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
        result["output_tail"] = (out + err)[-4000:]
    return result


@torch.no_grad()
def check_bf16_vs_fp32(sizes: Sizes) -> dict[str, Any]:
    device = torch.device(sizes.device)
    results = {}
    for name, (cfg, side) in sizes.precision_configs.items():
        torch.manual_seed(0)
        model = dit_throughput.random_dit(cfg, device, torch.float32).eval()
        inputs = dit_throughput.f1_inputs(cfg, side, device, torch.float32)
        with exact_fp32():
            ref = model(**inputs)
        model.to(torch.bfloat16)
        low = {k: v if k in FP32_INPUTS else v.to(torch.bfloat16) for k, v in inputs.items()}
        out = model(**low)
        results[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "video_tokens": dit_throughput.video_tokens(inputs),
            "ref_max_abs": float(ref.abs().max()), **errors(out, ref),
        }
        del model, ref, out
    return {"configs": results}


@torch.no_grad()
def check_sdpa_path(sizes: Sizes) -> dict[str, Any]:
    device = torch.device(sizes.device)
    torch.manual_seed(0)
    model = dit_throughput.random_dit(sizes.large, device, torch.bfloat16).eval()
    inputs = dit_throughput.f1_inputs(sizes.large, sizes.large_side, device, torch.bfloat16)
    model(**inputs)  # warm-up: one-time initialisation stays out of the trace
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        model(**inputs)
        sync(device)  # every kernel finished inside the trace
    events = prof.events()
    ops = Counter(e.name for e in events if e.name.startswith("aten::") and "attention" in e.name)
    kernels = Counter(e.name[:160] for e in events
                      if e.device_type == DeviceType.CUDA and ATTENTION_KERNEL.search(e.name))
    result: dict[str, Any] = {
        "backends": sorted({backend for op, backend in SDPA_OPS.items() if op in ops}),
        "aten_ops": dict(ops), "kernels": dict(kernels),
        "video_tokens": dit_throughput.video_tokens(inputs),
    }
    if device.type == "cuda":
        result["enabled"] = {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(), "math": torch.backends.cuda.math_sdp_enabled(),
        }
    return result


@torch.no_grad()
def check_offload(sizes: Sizes) -> dict[str, Any]:
    device = torch.device(sizes.device)
    torch.manual_seed(0)
    dit = dit_throughput.random_dit(sizes.large, device, torch.bfloat16).eval()
    state = f1_state(sizes.large, sizes.latent, device)
    pipeline = LongVideoPipeline(dit, state.config, None, sampling=SamplingConfig(steps=sizes.steps))
    noise = pipeline.section_noise(state, seed=0, section=state.section)
    # Sampled twice resident: the second is timed after the first warmed the kernels up, and the pair shows
    # the resident path itself repeats bit for bit (else a difference below would not be offload's).
    first, _ = timed(device, lambda: pipeline.denoise_section(state, noise))
    reset_peak(device)
    resident, resident_s = timed(device, lambda: pipeline.denoise_section(state, noise))
    resident_peak = peak_gib(device)
    handle, setup_s = timed(device, lambda: enable_block_offload(dit, device, prefetch=True))
    reset_peak(device)
    offloaded, offloaded_s = timed(device, lambda: pipeline.denoise_section(state, noise))
    return {
        "identical": torch.equal(offloaded, resident), "resident_repeatable": torch.equal(first, resident),
        "max_abs_diff": float((offloaded - resident).abs().max()),
        "prefetch_stream": handle.stream is not None, "blocks": len(handle.blocks),
        "parameters": sum(p.numel() for p in dit.parameters()), "latent": list(sizes.latent), "steps": sizes.steps,
        "resident_s": resident_s, "offloaded_s": offloaded_s, "offload_setup_s": setup_s,
        "slowdown": offloaded_s / resident_s,
        "resident_peak_gib": resident_peak, "offloaded_peak_gib": peak_gib(device),
    }


def check_mfu(sizes: Sizes) -> dict[str, Any]:
    device = torch.device(sizes.device)
    peak = dit_throughput.matmul_flops_per_s(device, torch.bfloat16, n=sizes.matmul_n)
    reset_peak(device)
    result = dit_throughput.measure(sizes.large_name, sizes.large, sizes.large_side, device,
                                    torch.bfloat16, sizes.mfu_steps, peak, gradient_checkpointing=True)
    return {**result, "matmul_n": sizes.matmul_n, "matmul_flops_per_s": peak, "peak_gib": peak_gib(device)}


@torch.no_grad()
def check_f1_generate(sizes: Sizes, plan: Background) -> dict[str, Any]:
    device = torch.device(sizes.device)
    planned = plan.plan()  # long finished: it started with the run
    cfg = DiTConfig.from_name(sizes.f1_preset)
    reset_peak(device)
    with torch.device("meta"):
        dit = PackedDiT(cfg)
    _, build_s = timed(device, lambda: materialise(dit, device))
    state = f1_state(cfg, sizes.latent, device)
    pipeline = LongVideoPipeline(dit.eval(), state.config, None, sampling=SamplingConfig(steps=sizes.steps))
    noise = pipeline.section_noise(state, seed=0, section=state.section)
    latents, section_s = timed(device, lambda: pipeline.denoise_section(state, noise))
    peak = peak_gib(device)
    reserved = torch.cuda.max_memory_reserved(device) / GIB if device.type == "cuda" else None
    frames = state.config.window * sizes.frames_per_latent  # what each section adds to the video
    return {
        "preset": sizes.f1_preset, "parameters": sum(p.numel() for p in dit.parameters()),
        "latent": list(sizes.latent), "window": state.config.window, "steps": sizes.steps,
        "conditioning_tokens": TEXT_TOKENS + IMAGE_TOKENS,
        "build_s": build_s, "section_s": section_s, "seconds_per_step": section_s / sizes.steps,
        "output_frames": frames, "seconds_per_output_frame": section_s / frames,
        "finite": bool(torch.isfinite(latents).all()),
        "peak_gib": peak, "reserved_gib": reserved,
        "plan": planned, "peak_over_plan": against_plan(peak, planned),
    }


def check_stage2_memory(sizes: Sizes, config: Path, plan: Background) -> dict[str, Any]:
    device = torch.device(sizes.device)
    planned = plan.plan()  # long finished: it started with the run
    reset_peak(device)
    with torch.device("meta"):
        module: StageModule = build_model(LvgCLI.read(["--config", str(config)]).as_dict()["model"])
    _, build_s = timed(device, lambda: materialise(module, device, sizes.stage2_frozen_dtype))
    # fp32 master copies of what trains, as in a real run (AdamW updates at lr 1e-5 vanish in bf16).
    module.setup("fit")
    cfg, window = module.dit.config, module.memory_pack_config.window
    inputs = conditioning(cfg, sizes.latent, device, torch.float32)
    g = torch.Generator().manual_seed(2)
    batch = {
        "id": ["gpu_check"], "text": inputs["text"], "text_mask": inputs["text_mask"], "pooled": inputs["pooled"],
        "image": inputs["image"],
        "latents": torch.randn(1, cfg.in_channels, 1 + 2 * window, *sizes.latent, generator=g).to(device),
    }
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=module.hparams.lr)

    def train_step() -> dict[int, Tensor]:
        # Lightning's bf16-mixed: the section loop under autocast, the optimizer step outside it.
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses, _ = module.video_gradients(
                batch, module.step_generator(0, 0),
                lambda loss, retain_graph: loss.backward(retain_graph=retain_graph), nullcontext,
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses

    losses, step_s = timed(device, train_step)
    peak = peak_gib(device)
    return {
        "config": str(config.relative_to(ROOT)) if sizes.stage2_config else "DRY_STAGE2 (toy size)",
        "parameters": sum(p.numel() for p in module.parameters()),
        "trainable": sum(p.numel() for p in module.trainable_parameters()),
        "latent": list(sizes.latent), "sections": len(losses), "losses": [float(v) for v in losses.values()],
        "build_s": build_s, "step_s": step_s,
        "peak_gib": peak, "plan": planned, "peak_over_plan": against_plan(peak, planned),
    }


# --- the run ---------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=props.total_memory / GIB, cudnn=torch.backends.cudnn.version())
    return env


def run_check(device: torch.device, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` with its wall time; an exception becomes ``{"error": ...}`` so the next check still runs."""
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as err:  # any failure (OOM, a kernel error, a bad config) is a result here
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = time.perf_counter() - start
    # The check's tensors are gone with its frame; hand their cached blocks back for the next one.
    reset_peak(device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    args = parser.parse_args()
    sizes = DRY if args.dry_run else FULL
    device = torch.device(sizes.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; run with --dry-run for the CPU version.")
    started, env = time.perf_counter(), environment(device)
    with tempfile.TemporaryDirectory() as tmp:
        stage2 = sizes.stage2_config
        if stage2 is None:
            stage2 = Path(tmp) / "stage2_toy.yaml"
            stage2.write_text(yaml.safe_dump(DRY_STAGE2))
        latent = [str(n) for n in sizes.latent]
        # Started first, in parallel: the CUDA tests finish before any check below uses the GPU (they would skew
        # its timings); the plans run on the CPU meanwhile. A test module that fails to import (a missing test
        # extra on the GPU machine) is counted under "errors" instead of stopping the CUDA tests from running.
        tests = Background(["-m", "pytest", "-q", "-m", "cuda", "--continue-on-collection-errors",
                            *sizes.cuda_test_paths], gpu=True)
        generate_plan = Background(["-m", "lvg", "plan", "--model", sizes.f1_preset, "--mode", "generate",
                                    "--latent", *latent, "--json"], gpu=False)
        stage2_plan = Background(["-m", "lvg", "plan", "--config", str(stage2), "--latent", *latent, "--json"],
                                 gpu=False)
        checks = {
            "cuda_tests": run_check(device, check_cuda_tests, tests),
            "bf16_vs_fp32": run_check(device, check_bf16_vs_fp32, sizes),
            "sdpa_path": run_check(device, check_sdpa_path, sizes),
            "offload": run_check(device, check_offload, sizes),
            "mfu": run_check(device, check_mfu, sizes),
            "f1_generate": run_check(device, check_f1_generate, sizes, generate_plan),
            "stage2_memory": run_check(device, check_stage2_memory, sizes, stage2, stage2_plan),
        }
    print(json.dumps({
        "benchmark": "gpu_check", "dry_run": args.dry_run, "environment": env, "checks": checks,
        "total_seconds": time.perf_counter() - started,
    }, indent=2))


if __name__ == "__main__":
    main()
