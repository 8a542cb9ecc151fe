"""MemoryPack: FramePack packing, RoPE time modes, SemanticPack and the shared state object."""

import pytest
import torch

from lvg.config import DiTConfig
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.models.packing import context_indices, pack_history
from lvg.models.rope import apply_rope, rope_grid
from lvg.models.semantic_pack import SemanticPack, SemanticPackConfig

CFG = DiTConfig.from_name("debug")
C, H, W = CFG.in_channels, 8, 8
WINDOW = 3


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def small_sp(**kwargs):
    return SemanticPackConfig(dim=32, num_heads=4, memory_grid=(2, 2), **kwargs)


def conditioning(batch=1, text_len=7, valid=None, seed=0):
    mask = torch.ones(batch, text_len)
    if valid is not None:
        for i, n in enumerate(valid):
            mask[i, n:] = 0
    return {
        "text": randn(batch, text_len, CFG.text_embed_dim, seed=seed),
        "text_mask": mask,
        "pooled": randn(batch, CFG.pooled_projection_dim, seed=seed + 1),
        "image": randn(batch, 5, CFG.image_proj_dim, seed=seed + 2),
    }


@pytest.fixture(scope="module")
def dit(make_dit):
    return make_dit(std=0.1)  # random weights, so every input matters


def denoise(dit, state, seed=0):
    b = state.start.shape[0]
    return dit(
        hidden_states=randn(b, C, WINDOW, H, W, seed=100 + seed),
        timestep=torch.full((b,), 600.0),
        guidance=torch.full((b,), 6000.0),
        **state.context(),
    )


# --- FramePack packing -------------------------------------------------------------------------


def framepack_f1_reference(start, sections, window):
    """FramePack-F1's demo loop (demo_gradio_f1.py), transcribed: clean latents for each section."""
    history_latents = torch.zeros(*start.shape[:2], 16 + 2 + 1, *start.shape[3:])
    history_latents = torch.cat([history_latents, start], dim=2)
    out = []
    for section in sections:
        clean_4x, clean_2x, clean_1x = history_latents[:, :, -sum([16, 2, 1]) :].split([16, 2, 1], dim=2)
        out.append((torch.cat([start, clean_1x], dim=2), clean_2x, clean_4x))
        history_latents = torch.cat([history_latents, section], dim=2)
    return out


def test_f1_layout_indices_reproduce_framepack():
    idx = context_indices(window=9, section=7, mode="relative")
    assert idx["indices_latents_clean"].tolist() == [0, 19]
    assert idx["indices_latents_history_4x"].tolist() == list(range(1, 17))
    assert idx["indices_latents_history_2x"].tolist() == [17, 18]
    assert idx["indices_latents"].tolist() == list(range(20, 29))
    # FramePack-F1: indices = arange(0, 1+16+2+1+9).split([1, 16, 2, 1, 9])
    start, _, _, i1, win = torch.arange(29).split([1, 16, 2, 1, 9])
    assert torch.equal(idx["indices_latents"], win)
    assert torch.equal(idx["indices_latents_clean"], torch.cat([start, i1]))


def test_packing_matches_framepack_f1_loop_section_by_section():
    start = randn(1, C, 1, H, W)
    sections = [randn(1, C, WINDOW, H, W, seed=s + 1) for s in range(9)]
    reference = framepack_f1_reference(start, sections, WINDOW)
    state = MemoryPackState(MemoryPackConfig(window=WINDOW), start, **conditioning())
    history = start
    for n, (clean, clean_2x, clean_4x) in enumerate(reference):
        packed = pack_history(history, start, WINDOW, n)
        ctx = state.context()
        for ours in (packed.as_kwargs(), ctx):
            assert torch.equal(ours["latents_clean"], clean)
            assert torch.equal(ours["latents_history_2x"], clean_2x)
            assert torch.equal(ours["latents_history_4x"], clean_4x)
        history = torch.cat([history, sections[n]], dim=2)
        state.update(sections[n])


@pytest.mark.parametrize("num_sections", [0, 1, 5, 500])
def test_context_size_is_independent_of_history_length(dit, num_sections):
    start = randn(2, C, 1, H, W)
    history = torch.cat([start, randn(2, C, num_sections * 9, H, W, seed=1)], dim=2)
    packed = pack_history(history, start, window=9, section=num_sections)
    assert packed.latents_clean.shape == (2, C, 2, H, W)
    assert packed.latents_history_2x.shape == (2, C, 2, H, W)
    assert packed.latents_history_4x.shape == (2, C, 16, H, W)
    tokens = sum(
        dit.clean_x_embedder(x, scale).shape[1]
        for x, scale in ((packed.latents_clean, "1x"), (packed.latents_history_2x, "2x"),
                         (packed.latents_history_4x, "4x"))
    )
    # 1x: 2 frames x 4x4 patches; 2x: 1 x 2x2; 4x: 4 x 1x1 -- whatever the history length.
    assert tokens == 2 * 16 + 1 * 4 + 4 * 1
    assert packed.indices_latents.tolist() == [list(range(20, 29))] * 2
    if num_sections == 500:
        assert torch.equal(packed.latents_clean[:, :, 1], history[:, :, -1])
        assert torch.equal(packed.latents_history_4x, history[:, :, -19:-3])


def test_short_history_is_zero_filled_like_framepack():
    start = randn(1, C, 1, H, W)
    section = randn(1, C, 9, H, W, seed=1)
    packed = pack_history(torch.cat([start, section], dim=2), start, window=9, section=1)
    four = packed.latents_history_4x
    assert torch.equal(four[:, :, :9], torch.zeros_like(four[:, :, :9]))  # 19 - 10 = 9 zero slots
    assert torch.equal(four[:, :, 9:10], start)
    assert torch.equal(four[:, :, 10:], section[:, :, :6])
    assert torch.equal(packed.latents_history_2x, section[:, :, 6:8])
    assert torch.equal(packed.latents_clean, torch.cat([start, section[:, :, 8:]], dim=2))
    first = pack_history(start, start, window=9, section=0)  # section 0: the 1x slot holds the start
    assert torch.equal(first.latents_clean, torch.cat([start, start], dim=2))
    assert not first.latents_history_4x.any() and not first.latents_history_2x.any()


@pytest.mark.parametrize(
    "section, window, clean, two, four",
    [
        # 3rd section (n=2) of a window-9 video: frames 19..27, history 0..18, start at 0.
        (2, list(range(19, 28)), [0, 18], [16, 17], list(range(16))),
        # 50th section (n=49): s = 1 + 49 * 9 = 442.
        (49, list(range(442, 451)), [0, 441], [439, 440], list(range(423, 439))),
    ],
)
def test_absolute_mode_indices_by_hand(section, window, clean, two, four):
    idx = context_indices(window=9, section=section, mode="absolute")
    assert idx["indices_latents"].tolist() == window
    assert idx["indices_latents_clean"].tolist() == clean
    assert idx["indices_latents_history_2x"].tolist() == two
    assert idx["indices_latents_history_4x"].tolist() == four


def test_absolute_mode_first_section_puts_padding_before_the_video():
    idx = context_indices(window=9, section=0, mode="absolute")
    assert idx["indices_latents"].tolist() == list(range(1, 10))
    assert idx["indices_latents_clean"].tolist() == [0, 0]  # the 1x slot holds the start latent itself
    assert idx["indices_latents_history_4x"].tolist() == list(range(-18, -2))


def test_packing_rejects_bad_input():
    with pytest.raises(ValueError, match=r"start \(B, C, 1, H, W\)"):
        pack_history(randn(1, C, 5, H, W), randn(1, C, 2, H, W), 9, 0)
    with pytest.raises(ValueError, match="differ in batch, channels or spatial size"):
        pack_history(randn(1, C, 5, H, W), randn(1, C, 1, H, 4), 9, 0)
    with pytest.raises(ValueError, match="rope_time_mode must be 'relative' or 'absolute'"):
        context_indices(9, 0, mode="causal")
    with pytest.raises(ValueError, match="rope_time_mode"):
        MemoryPackConfig(rope_time_mode="causal")


# --- RoPE ----------------------------------------------------------------------------------------


def qk_score(q, k, pos_q, pos_k, y=1, x=2):
    """Score of a query at frame pos_q and a key at frame pos_k, both at grid cell (y, x)."""

    def rotate(v, pos):
        cos, sin = rope_grid(torch.tensor([[float(pos)]]), 3, 3, CFG.rope_axes_dim, CFG.rope_theta)
        cell = y * 3 + x
        return apply_rope(v.view(1, 1, 1, -1), (cos[:, cell : cell + 1], sin[:, cell : cell + 1])).flatten()

    return torch.dot(rotate(q, pos_q), rotate(k, pos_k))


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_rope_score_depends_only_on_index_difference(mode):
    q, k = randn(CFG.attention_head_dim, seed=1).double(), randn(CFG.attention_head_dim, seed=2).double()
    idx = context_indices(window=9, section=49, mode=mode)
    window0, recent = idx["indices_latents"][0].item(), idx["indices_latents_clean"][1].item()
    score = qk_score(q.float(), k.float(), window0, recent)
    assert window0 - recent == 1  # the newest history frame sits right before the window in both modes
    for shift in (-7, 3, 1000):
        torch.testing.assert_close(qk_score(q.float(), k.float(), window0 + shift, recent + shift), score,
                                   rtol=1e-4, atol=1e-4)
    # A different gap gives a different score: positions really enter.
    assert abs(qk_score(q.float(), k.float(), window0, recent - 5) - score) > 1e-3


def test_absolute_mode_changes_backbone_output(dit):
    start = randn(1, C, 1, H, W)
    outs = {}
    for mode in ("relative", "absolute"):
        state = MemoryPackState(MemoryPackConfig(window=WINDOW, rope_time_mode=mode), start, **conditioning())
        for n in range(3):
            state.update(randn(1, C, WINDOW, H, W, seed=n + 10))
        with torch.no_grad():
            outs[mode] = denoise(dit, state)
    assert (outs["relative"] - outs["absolute"]).abs().max() > 1e-4


# --- SemanticPack --------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion, psi_len_0, psi_len",
                         [("A", 7 + 5, 4), ("B", 7 + 5, 7 + 5), ("C", 7 + 5 + 4, 7 + 5 + 4)])
def test_fusion_shapes_masks_and_fixed_size_over_20_updates(fusion, psi_len_0, psi_len):
    torch.manual_seed(0)
    sp = SemanticPack(small_sp(fusion=fusion), CFG)
    cond = conditioning(batch=2, valid=(7, 3))
    state = MemoryPackState(MemoryPackConfig(window=WINDOW), randn(2, C, 1, H, W), semantic_pack=sp, **cond)
    assert state.psi.shape == (2, psi_len_0, 32)
    text_mask = cond["text_mask"].bool()
    expected_mask0 = torch.cat([text_mask, torch.ones(2, 5, dtype=torch.bool)], dim=1)
    if fusion == "C":  # visual slots start masked
        expected_mask0 = torch.cat([expected_mask0, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    assert torch.equal(state.psi_mask, expected_mask0)
    with torch.no_grad():
        for n in range(20):  # the shape is checked after every update: 20 prove the recurrence keeps it
            state.update(randn(2, C, WINDOW, H, W, seed=n))
            assert state.psi.shape == (2, psi_len, 32)
    assert state.section == 20 and torch.isfinite(state.psi).all()
    if fusion == "A":
        assert state.psi_mask.all()
    else:  # text padding stays masked; C's visual slots are now valid
        assert torch.equal(state.psi_mask[:, :7], text_mask)
        assert state.psi_mask[:, 7:].all()
    assert state.context()["memory_tokens"].shape == (2, psi_len, CFG.inner_dim)


def test_memorize_has_fixed_size_at_any_resolution():
    sp = SemanticPack(small_sp(window_frames=2), CFG)
    for t, h, w in ((1, 8, 8), (3, 8, 12), (9, 30, 52)):
        assert sp.memorize(randn(1, C, t, h, w)).shape == (1, 4, 32)


@pytest.mark.parametrize("fusion", ["A", "B", "C"])
def test_text_padding_does_not_change_memory(dit, fusion):
    torch.manual_seed(0)
    sp = SemanticPack(small_sp(fusion=fusion), CFG)
    short = conditioning(text_len=5)
    padded = {**short, "text": torch.cat([short["text"], randn(1, 4, CFG.text_embed_dim, seed=9)], dim=1),
              "text_mask": torch.cat([short["text_mask"], torch.zeros(1, 4)], dim=1)}
    outs = []
    for cond in (short, padded):
        state = MemoryPackState(MemoryPackConfig(window=WINDOW), randn(1, C, 1, H, W), semantic_pack=sp, **cond)
        with torch.no_grad():
            for n in range(3):
                state.update(randn(1, C, WINDOW, H, W, seed=n))
            outs.append((state.psi[:, state.psi_mask[0]], denoise(dit, state)))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-6)


def test_zero_psi0():
    sp = SemanticPack(small_sp(psi0="zero"), CFG)
    state = MemoryPackState(MemoryPackConfig(window=WINDOW), randn(1, C, 1, H, W), semantic_pack=sp, **conditioning())
    assert state.psi.shape == (1, 12, 32) and not state.psi.any()
    state.update(randn(1, C, WINDOW, H, W))
    assert state.psi.abs().sum() > 0  # memory fills from the video


@pytest.mark.parametrize("bptt, text_proj_gets_grad", [(1, False), (3, True)])
def test_gradients_flow_into_memorize_and_squeeze(dit, bptt, text_proj_gets_grad):
    torch.manual_seed(0)
    sp = SemanticPack(small_sp(), CFG)
    state = MemoryPackState(
        MemoryPackConfig(window=WINDOW, psi_bptt=bptt), randn(1, C, 1, H, W), semantic_pack=sp, **conditioning()
    )
    for n in range(3):
        state.update(randn(1, C, WINDOW, H, W, seed=n))
    denoise(dit, state).square().mean().backward()
    for name, module in (("memorize", sp.memorize), ("squeeze", sp.squeeze), ("proj_out", sp.proj_out)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    text_grad = sp.text_proj.weight.grad
    assert (text_grad is not None and text_grad.abs().sum() > 0) == text_proj_gets_grad
    dit.zero_grad()


def test_semantic_pack_off_is_bit_identical_to_plain_f1(dit):
    start = randn(1, C, 1, H, W)
    sections = [randn(1, C, WINDOW, H, W, seed=s + 1) for s in range(3)]
    cond = conditioning()
    off = SemanticPack(small_sp(enabled=False), CFG)
    for state in (
        MemoryPackState(MemoryPackConfig(window=WINDOW), start, **cond),
        MemoryPackState(MemoryPackConfig(window=WINDOW), start, semantic_pack=off, **cond),
    ):
        for n, (clean, clean_2x, clean_4x) in enumerate(framepack_f1_reference(start, sections, WINDOW)):
            idx = torch.arange(0, 1 + 16 + 2 + 1 + WINDOW).split([1, 16, 2, 1, WINDOW])
            plain = {
                "encoder_hidden_states": cond["text"], "encoder_attention_mask": cond["text_mask"],
                "pooled_projections": cond["pooled"], "image_embeds": cond["image"],
                "latents_clean": clean, "indices_latents_clean": torch.cat([idx[0], idx[3]]),
                "latents_history_2x": clean_2x, "indices_latents_history_2x": idx[2],
                "latents_history_4x": clean_4x, "indices_latents_history_4x": idx[1], "indices_latents": idx[4],
            }
            with torch.no_grad():
                x = randn(1, C, WINDOW, H, W, seed=50 + n)
                common = {"hidden_states": x, "timestep": torch.tensor([600.0]), "guidance": torch.tensor([6000.0])}
                assert torch.equal(dit(**common, **state.context()), dit(**common, **plain))
            state.update(sections[n])


def test_memory_pack_conditioned_forward_uses_memory(dit):
    torch.manual_seed(0)
    sp = SemanticPack(small_sp(), CFG)
    start, cond = randn(1, C, 1, H, W), conditioning()
    with_memory = MemoryPackState(MemoryPackConfig(window=WINDOW), start, semantic_pack=sp, **cond)
    without = MemoryPackState(MemoryPackConfig(window=WINDOW), start, **cond)
    with torch.no_grad():
        for n in range(2):
            for state in (with_memory, without):
                state.update(randn(1, C, WINDOW, H, W, seed=n))
        a, b = denoise(dit, with_memory), denoise(dit, without)
    assert a.shape == b.shape == (1, C, WINDOW, H, W)
    assert (a - b).abs().max() > 1e-4


# --- state: save / restore -----------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["A", "C"])
def test_state_save_restore_resumes_exactly(dit, tmp_path, fusion):
    torch.manual_seed(0)
    sp = SemanticPack(small_sp(fusion=fusion), CFG)
    cfg, start, cond = MemoryPackConfig(window=WINDOW, rope_time_mode="absolute"), randn(1, C, 1, H, W), conditioning()
    sections = [randn(1, C, WINDOW, H, W, seed=s) for s in range(5)]
    with torch.no_grad():
        straight = MemoryPackState(cfg, start, semantic_pack=sp, **cond)
        for s in sections:
            straight.update(s)
        interrupted = MemoryPackState(cfg, start, semantic_pack=sp, **cond)
        for s in sections[:3]:
            interrupted.update(s)
        torch.save(interrupted.state_dict(), tmp_path / "state.pt")
        resumed = MemoryPackState(cfg, start, semantic_pack=sp, **cond)
        resumed.load_state_dict(torch.load(tmp_path / "state.pt"))
        for s in sections[3:]:
            resumed.update(s)
        assert resumed.section == straight.section == 5
        assert torch.equal(resumed.psi, straight.psi)
        assert torch.equal(denoise(dit, resumed), denoise(dit, straight))


def test_state_from_another_configuration_is_refused():
    sp_a, sp_b = SemanticPack(small_sp(fusion="A"), CFG), SemanticPack(small_sp(fusion="B"), CFG)
    start, cond = randn(1, C, 1, H, W), conditioning()
    saved = MemoryPackState(MemoryPackConfig(window=WINDOW), start, semantic_pack=sp_a, **cond).state_dict()
    with pytest.raises(ValueError, match="resume with the configuration that wrote it"):
        MemoryPackState(MemoryPackConfig(window=WINDOW), start, semantic_pack=sp_b, **cond).load_state_dict(saved)
    with pytest.raises(ValueError, match="'start' has shape"):
        MemoryPackState(MemoryPackConfig(window=WINDOW), randn(1, C, 1, H, 16), semantic_pack=sp_a,
                        **cond).load_state_dict(saved)


def test_update_rejects_wrong_shape():
    state = MemoryPackState(MemoryPackConfig(window=WINDOW), randn(1, C, 1, H, W), **conditioning())
    with pytest.raises(ValueError, match=r"\(1, 4, T, 8, 8\)"):
        state.update(randn(1, C, WINDOW, H, W + 2))


def test_semantic_pack_config_validation():
    with pytest.raises(ValueError, match="fusion must be 'A', 'B' or 'C'"):
        SemanticPackConfig(fusion="D")
    with pytest.raises(ValueError, match="psi0 must be"):
        SemanticPackConfig(psi0="noise")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        SemanticPackConfig(dim=30, num_heads=4)
