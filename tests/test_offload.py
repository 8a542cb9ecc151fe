"""Block-level CPU offload: exact outputs, blocks loaded only while they run, clean removal, pipeline hook-up."""

import pytest
import torch

from lvg.models.dit import PackedDiT
from lvg.models.memory_pack import MemoryPackConfig
from lvg.sampling.offload import enable_block_offload
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from toy_setup import DEBUG_FOR_PIXEL4, pixel4_encoders, start_image

DIT = dict(std=0.05, num_layers=2, num_single_layers=2, **DEBUG_FOR_PIXEL4)  # make_dit(**DIT)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 48, 2, 4, 4, generator=g), "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 5, 64, generator=g),
        "encoder_attention_mask": torch.ones(1, 5, dtype=torch.bool),
        "pooled_projections": torch.randn(1, 64, generator=g), "image_embeds": torch.randn(1, 3, 48, generator=g),
        "guidance": torch.tensor([10000.0]),
    }


def blocks(dit):
    return [m for m in dit.modules() if isinstance(m, PackedDiT.block_types)]


@torch.no_grad()
def test_offloaded_blocks_are_loaded_only_while_they_run_and_outputs_are_identical(make_dit):
    dit = make_dit(**DIT)
    expected = dit(**inputs())
    handle = enable_block_offload(dit, "cpu", prefetch=True)
    stored = {id(p): p.data_ptr() for b in blocks(dit) for p in b.parameters()}
    seen = []

    def during(module, args, output, block):  # runs inside the block's forward (its attention)
        seen.append(all(p.device == handle.device and p.data_ptr() != stored[id(p)] for p in block.parameters()))

    for b in blocks(dit):
        b.attn.register_forward_hook(lambda m, a, o, b=b: during(m, a, o, b))
    assert torch.equal(dit(**inputs()), expected)
    assert seen == [True] * len(blocks(dit))
    # After the forward every block points at its stored CPU tensor again.
    assert all(p.data_ptr() == stored[id(p)] for b in blocks(dit) for p in b.parameters())


@torch.no_grad()
def test_remove_restores_the_model_and_enable_is_idempotent(make_dit):
    dit = make_dit(**DIT)
    expected = dit(**inputs())
    handle = enable_block_offload(dit, "cpu")
    assert enable_block_offload(dit, "cpu") is handle and dit.block_offload is handle
    with pytest.raises(ValueError, match="already offloaded"):
        enable_block_offload(dit, "meta")
    handle.remove()
    assert dit.block_offload is None
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in blocks(dit))
    assert all(p.device.type == "cpu" for p in dit.parameters())
    assert torch.equal(dit(**inputs()), expected)


@torch.no_grad()
def test_moving_the_whole_model_leaves_offloaded_blocks_in_host_memory(make_dit):
    """What a Lightning strategy does before lvg test / predict: module.to(device) moves everything but the blocks
    (the meta device stands in for a GPU here); after remove() the blocks move again."""
    dit = make_dit(**DIT)
    outer = torch.nn.ModuleDict({"dit": dit, "other": torch.nn.Linear(2, 2)})
    handle = enable_block_offload(dit, "cpu")
    outer.to("meta")
    in_blocks = {id(p) for b in blocks(dit) for p in b.parameters()}
    assert in_blocks and all(p.device.type == "cpu" for b in blocks(dit) for p in b.parameters())
    assert all(p.device.type == "meta" for p in outer.parameters() if id(p) not in in_blocks)
    outer.to(torch.bfloat16)  # dtype moves skip them too: the host copies are what gets streamed
    assert all(p.dtype == torch.float32 for b in blocks(dit) for p in b.parameters())
    handle.remove()
    outer.to("meta")
    assert all(p.device.type == "meta" for p in outer.parameters())


def test_pipeline_with_offload_generates_the_same_video_and_reports_the_execution_device(make_dit):
    def pipeline(offload):
        return LongVideoPipeline(make_dit(**DIT), MemoryPackConfig(window=3, rope_time_mode="absolute"),
                                 pixel4_encoders(), sampling=SamplingConfig(steps=2, offload=offload), device="cpu")

    image = start_image()
    plain, offloaded = pipeline(False), pipeline(True)
    assert offloaded.dit.block_offload is not None and offloaded._device_dtype()[0] == torch.device("cpu")
    a = plain(image, ["a red circle"], num_sections=2, fps=8, progress=False)
    b = offloaded(image, ["a red circle"], num_sections=2, fps=8, progress=False)
    assert torch.equal(a, b)
    # Offload is exact, so it does not change the resume fingerprint.
    assert plain._fingerprint(image, [], 2, 8, 0) == offloaded._fingerprint(image, [], 2, 8, 0)


def test_hunyuan_vae_tiling_and_slicing_are_options_on_by_default():
    diffusers = pytest.importorskip("diffusers")
    from lvg.models.hunyuan import HunyuanVideoVAE

    def vae():
        return diffusers.AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4)

    default, plain = HunyuanVideoVAE(vae()), HunyuanVideoVAE(vae(), tiling=False, slicing=False)
    assert default.vae.use_tiling and default.vae.use_slicing
    assert not plain.vae.use_tiling and not plain.vae.use_slicing
