"""PackedDiT against diffusers' HunyuanVideoFramepackTransformer3DModel (the reference oracle)."""

import pytest
import torch

from dit_inputs import F1_INDICES, make_inputs, select
from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT

diffusers = pytest.importorskip("diffusers", reason="the `test` extra installs the diffusers oracle")

CFG = DiTConfig.from_name("debug")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = diffusers.HunyuanVideoFramepackTransformer3DModel(**CFG.to_dict()).eval()
    ours = PackedDiT(CFG).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def run_ref(ref, inputs):
    with torch.no_grad():
        return ref(**inputs, return_dict=False)[0]


def run(ours, inputs):
    with torch.no_grad():
        return ours(**inputs)


def assert_close(a, b, atol=1e-5):
    assert a.shape == b.shape
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol}"


def test_parameter_names_match_diffusers(models):
    ref, ours = models
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }


@pytest.mark.parametrize("f1_indices", [False, True], ids=["diffusers-test-indices", "f1-indices"])
def test_parity_batch1_with_history(models, f1_indices):
    ref, ours = models
    inputs = make_inputs(f1_indices=f1_indices)
    out = run(ours, inputs)
    assert_close(out, run_ref(ref, inputs))
    assert out.abs().mean() > 1e-3  # random weights: a real, non-trivial output


def test_parity_batch1_with_text_padding(models):
    ref, ours = models
    inputs = make_inputs(text_len=9, valid=(5,))
    assert_close(run(ours, inputs), run_ref(ref, inputs))


def test_batch_with_different_text_lengths_equals_single_samples(models):
    ref, ours = models
    inputs = make_inputs(batch=2, text_len=9, valid=(9, 4), seed=1)
    batched = run(ours, inputs)
    for i in range(2):
        assert_close(batched[i : i + 1], run(ours, select(inputs, i)))
    assert_close(batched, run_ref(ref, inputs))  # diffusers' masked batch agrees too


def test_per_sample_frame_indices(models):
    """(B, n) indices: each sample equals a batch-1 run with its own 1-D indices (diffusers oracle)."""
    ref, ours = models
    inputs = make_inputs(batch=2, text_len=7, valid=(7, 7), seed=2)
    # Sample 1 sits 100 frames later in its video while its start latent keeps index 0 (the paper's
    # absolute RoPE): not a uniform shift, so RoPE's relative invariance cannot hide a mix-up.
    later = {
        "indices_latents": torch.arange(120, 123),
        "indices_latents_clean": torch.tensor([0, 119]),
        "indices_latents_history_2x": torch.tensor([117, 118]),
        "indices_latents_history_4x": torch.arange(101, 117),
    }
    per_sample = {k: torch.stack([v, later[k]]) for k, v in F1_INDICES.items()}
    inputs.update(per_sample)
    batched = run(ours, inputs)
    for i in range(2):
        single = select(inputs, i)
        single.update({k: v[i] for k, v in per_sample.items()})
        assert_close(batched[i : i + 1], run_ref(ref, single))
    shared = run(ours, {**inputs, **{k: v[0] for k, v in per_sample.items()}})
    assert (shared[1] - batched[1]).abs().max() > 1e-4  # the indices of sample 1 really mattered


def test_memory_token_slot(models):
    _, ours = models
    inputs = make_inputs(batch=2, text_len=9, valid=(9, 3), seed=3)
    memory = torch.randn(2, 5, CFG.inner_dim, generator=torch.Generator().manual_seed(4))
    without = run(ours, inputs)
    with_memory = run(ours, {**inputs, "memory_tokens": memory})
    assert (with_memory - without).abs().max() > 1e-4  # the memory is attended to
    # Fully masked memory is the same as no memory, batched (masked SDPA) and single (cropped).
    masked = run(ours, {**inputs, "memory_tokens": memory, "memory_mask": torch.zeros(2, 5, dtype=torch.bool)})
    assert_close(masked, without)
    # A batch with partially masked memory equals its samples run alone with the valid memory only.
    memory_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    batched = run(ours, {**inputs, "memory_tokens": memory, "memory_mask": memory_mask})
    for i in range(2):
        single = {**select(inputs, i), "memory_tokens": memory[i : i + 1, memory_mask[i]]}
        assert_close(batched[i : i + 1], run(ours, single))


def test_gradient_checkpointing_gives_same_output_and_grads(models):
    _, ours = models
    model = PackedDiT(CFG)
    model.load_state_dict(ours.state_dict())
    inputs = make_inputs(batch=2, text_len=9, valid=(9, 5), seed=5)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = enabled
        out = model(**inputs)
        out.square().mean().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_framepack_f1_preset_on_meta_matches_diffusers_parameter_count():
    cfg = DiTConfig.from_name("framepack-f1")
    with torch.device("meta"):
        ours = PackedDiT(cfg)
        ref = diffusers.HunyuanVideoFramepackTransformer3DModel(**cfg.to_dict())
    n_ours = sum(p.numel() for p in ours.parameters())
    assert all(p.is_meta for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters())
    assert 12.5e9 < n_ours < 13.5e9
    # Direct Forcing's trainable part (norm_out + proj_out) is ~19.1M parameters.
    trainable = sum(p.numel() for m in (ours.norm_out, ours.proj_out) for p in m.parameters())
    assert trainable == 3072 * 6144 + 6144 + 3072 * 64 + 64


def test_initialize_weights_after_meta_materialisation():
    with torch.device("meta"):
        meta_model = PackedDiT(CFG)
    meta_model.to_empty(device="cpu")
    torch.manual_seed(0)
    meta_model.initialize_weights()
    cpu_model = PackedDiT(CFG)
    torch.manual_seed(0)
    cpu_model.initialize_weights()
    for (name, a), b in zip(meta_model.state_dict().items(), cpu_model.state_dict().values()):
        assert torch.equal(a, b), name
    # adaLN-Zero: every block starts as the identity and the output projection at zero.
    out = meta_model(**make_inputs())
    assert torch.equal(out, torch.zeros_like(out))
    assert all(torch.equal(b.norm1.linear.weight, torch.zeros_like(b.norm1.linear.weight))
               for b in meta_model.transformer_blocks)


def test_bf16_forward_close_to_fp32(models):
    _, ours = models
    model = PackedDiT(CFG)
    model.load_state_dict(ours.state_dict())
    inputs = make_inputs()
    ref = run(model, inputs)
    model.to(torch.bfloat16)
    out = run(model, {k: v.bfloat16() if v.is_floating_point() and not k.startswith("indices") else v
                      for k, v in inputs.items()})
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x: x.update(hidden_states=torch.randn(1, 5, 3, 4, 4)),
         r"hidden_states must have shape \(B, 4, T, H, W\)"),
        (lambda x: x.update(hidden_states=torch.randn(1, 4, 3, 5, 4)), "divisible by the patch size"),
        (lambda x: x.update(indices_latents=torch.arange(4)), r"indices_latents must have shape \(3,\) or \(1, 3\)"),
        (lambda x: x.update(indices_latents_history_4x=torch.arange(15)), r"4x history must have shape \(16,\)"),
        (lambda x: x.pop("indices_latents_clean"), "indices of the 1x history is required"),
        (lambda x: x.update(latents_clean=torch.randn(1, 4, 2, 6, 6)), "spatial size"),
        (lambda x: x.update(guidance=None), "guidance of shape"),
        (lambda x: x.update(timestep=torch.tensor(500.0)), "timestep must have shape"),
        (lambda x: x.update(encoder_attention_mask=torch.zeros(1, 7)), "at least one valid text token"),
        (lambda x: x.update(encoder_hidden_states=torch.randn(1, 7, 15)),
         r"encoder_hidden_states must have shape \(1, L, 16\)"),
        (lambda x: x.update(image_embeds=None), "image_embeds is required"),
        (lambda x: x.update(memory_tokens=torch.randn(1, 3, 7)), r"memory_tokens must have shape \(1, L, 20\)"),
        (lambda x: x.update(pooled_projections=torch.randn(1, 9)), "pooled_projections must have shape"),
    ],
)
def test_bad_input_names_expected_and_given(models, change, match):
    _, ours = models
    inputs = make_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=match):
        run(ours, inputs)
