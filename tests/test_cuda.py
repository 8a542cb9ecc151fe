"""CUDA paths: bf16 SDPA against the fp32 CPU result, block offload with prefetch on a side stream, the section
loop under bf16 autocast. Marked ``cuda`` (``pytest -m cuda``; benchmarks/gpu_check.py runs them), skipped without
a GPU."""

from contextlib import nullcontext

import pytest
import torch

from dit_inputs import F1_INDICES
from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT
from lvg.models.memory_pack import MemoryPackConfig
from lvg.models.semantic_pack import SemanticPackConfig
from lvg.sampling.offload import enable_block_offload
from lvg.training import DirectForcingModule, TeacherForcingModule

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CFG = DiTConfig.from_name("toy")  # head dim 32: the flash / memory-efficient kernels take it (debug's 10 does not)
FP32_INPUTS = ("timestep", "guidance", "encoder_attention_mask")
DIT = {"preset": "toy", "std": 0.02}  # make_dit(**DIT): every weight random (adaLN-Zero makes blocks the identity)


def inputs(valid: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    """F1-layout inputs (3-frame window, 16/2/1 history) at 16 x 16 latents, one sample per entry of ``valid``
    (its count of valid text tokens out of 7)."""
    g = torch.Generator().manual_seed(seed)
    b, c = len(valid), CFG.in_channels

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    mask = torch.zeros(b, 7)
    for i, n in enumerate(valid):
        mask[i, :n] = 1
    return {
        "hidden_states": r(b, c, 3, 16, 16), "timestep": torch.full((b,), 700.0),
        "encoder_hidden_states": r(b, 7, CFG.text_embed_dim), "encoder_attention_mask": mask,
        "pooled_projections": r(b, CFG.pooled_projection_dim), "image_embeds": r(b, 5, CFG.image_proj_dim),
        "guidance": torch.full((b,), 10000.0), "latents_clean": r(b, c, 2, 16, 16),
        "latents_history_2x": r(b, c, 2, 16, 16), "latents_history_4x": r(b, c, 16, 16, 16), **F1_INDICES,
    }


def on_cuda(x: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Inputs on the GPU in ``dtype``; timestep, guidance and the mask stay fp32 as every caller passes them."""
    return {k: v.cuda() if k in FP32_INPUTS or not v.is_floating_point() else v.to("cuda", dtype) for k, v in x.items()}


def blocks(dit: PackedDiT) -> list[torch.nn.Module]:
    return [m for m in dit.modules() if isinstance(m, PackedDiT.block_types)]


@pytest.mark.parametrize("valid", [(7,), (7, 4)], ids=["batch1-unmasked", "batch2-masked"])
@torch.no_grad()
def test_packed_dit_in_bf16_on_cuda_is_close_to_fp32_on_the_cpu(valid, make_dit):
    """Batch 1 crops the text padding and takes the unmasked (flash) SDPA; batch 2 with padding the masked one.
    bf16 against fp32 on the CPU measured 0.3-0.6% relative RMS and 0.6-0.9% max error (toy, debug)."""
    dit, x = make_dit(**DIT), inputs(valid)
    expected = dit(**x).double()
    got = dit.to("cuda", torch.bfloat16)(**on_cuda(x, torch.bfloat16)).double().cpu()
    err = got - expected
    assert float(err.square().mean().sqrt() / expected.square().mean().sqrt()) < 0.03
    assert float(err.abs().max() / expected.abs().max()) < 0.06


@torch.no_grad()
def test_block_offload_with_prefetch_is_bit_identical_to_the_resident_model_on_cuda(make_dit):
    dit = make_dit(**DIT).to("cuda", torch.bfloat16)
    calls = [on_cuda(inputs((7,), seed), torch.bfloat16) for seed in (0, 1)]
    expected = [dit(**x) for x in calls]
    handle = enable_block_offload(dit, "cuda", prefetch=True)
    assert handle.stream is not None  # the next block's copy runs on a side stream
    assert all(p.device.type == "cpu" and p.is_pinned() for b in blocks(dit) for p in b.parameters())
    for _ in range(2):  # a second pass starts again from the first block, whose copy was not prefetched
        for x, want in zip(calls, expected):
            assert torch.equal(dit(**x), want)
    assert all(p.device.type == "cpu" for b in blocks(dit) for p in b.parameters())
    handle.remove()
    assert all(p.device.type == "cuda" for p in dit.parameters())
    assert torch.equal(dit(**calls[0]), expected[0])


@pytest.mark.parametrize("stage", ["teacher_forcing", "direct_forcing"])
def test_the_section_loop_under_bf16_autocast_on_cuda_has_finite_losses_and_gradients(stage):
    """The stages' own section loop (two sections, SemanticPack on) as Lightning's bf16-mixed runs it: Teacher
    Forcing training everything in fp32, and stage 2's mix of frozen bf16 weights and an fp32 output layer
    (:meth:`StageModule.setup`), whose norms meet activations of the other dtype."""
    torch.manual_seed(0)
    kwargs = {"dit": "toy", "memory_pack": MemoryPackConfig(window=3, rope_time_mode="absolute"),
              "semantic_pack": SemanticPackConfig(dim=64, num_heads=4, memory_grid=(4, 4))}
    if stage == "teacher_forcing":
        module = TeacherForcingModule(**kwargs).cuda()
    else:
        module = DirectForcingModule(**kwargs).to("cuda", torch.bfloat16)
        module.setup("fit")
        assert {p.dtype for p in module.trainable_parameters()} == {torch.float32}
    g = torch.Generator().manual_seed(0)
    batch = {
        "id": ["random"], "latents": torch.randn(1, CFG.in_channels, 1 + 2 * 3, 16, 16, generator=g).cuda(),
        "text": torch.randn(1, 7, CFG.text_embed_dim, generator=g).cuda(),
        "text_mask": torch.ones(1, 7, dtype=torch.bool, device="cuda"),
        "pooled": torch.randn(1, CFG.pooled_projection_dim, generator=g).cuda(),
        "image": torch.randn(1, 5, CFG.image_proj_dim, generator=g).cuda(),
    }
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses, sigmas = module.video_gradients(
            batch, module.step_generator(0, 0), lambda loss, retain_graph: loss.backward(retain_graph=retain_graph),
            nullcontext,
        )
    assert sorted(losses) == [0, 1] and all(bool(torch.isfinite(loss)) for loss in losses.values())
    grads = [p.grad for p in module.trainable_parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(grad).all()) for grad in grads)
    assert float(module.dit.proj_out.weight.grad.abs().sum()) > 0
    assert sigmas.shape == (2,)
