"""``lvg plan``: parameter / optimizer sizes against closed forms, FSDP division, measured activations, CLI."""

from __future__ import annotations

import json

import pytest
from torch._subclasses.fake_tensor import FakeTensorMode

from lvg.cli import main as lvg_main
from lvg.cli.configs import build_model
from lvg.cli.tools import plan_main
from lvg.config import DIT_PRESETS
from lvg.models.dit import DualStreamBlock, SingleStreamBlock
from lvg.plan import PlanError, make_plan, measure_activations

NO_SEMANTIC = {"enabled": False}


def linear(i: int, o: int) -> int:
    return i * o + o


def dual_block_params(d: int, head_dim: int, hidden: int) -> int:
    """DualStreamBlock: 2 Modulation(6), 8 D x D projections (video + context), 4 RMSNorm(head_dim), 2 MLPs."""
    return 2 * linear(d, 6 * d) + 8 * linear(d, d) + 4 * head_dim + 2 * (linear(d, hidden) + linear(hidden, d))


def single_block_params(d: int, head_dim: int, hidden: int) -> int:
    """SingleStreamBlock: Modulation(3), q/k/v, 2 RMSNorm(head_dim), proj_mlp, proj_out over [attn, mlp]."""
    return linear(d, 3 * d) + 3 * linear(d, d) + 2 * head_dim + linear(d, hidden) + linear(d + hidden, d)


MODE = FakeTensorMode()
"""One fake mode for building and measuring: fake tensors of two modes do not mix."""


def build(dit: str = "debug", **init_args):
    with MODE:
        return build_model({"class_path": "lvg.training.TeacherForcingModule",
                             "init_args": {"dit": dit, "semantic_pack": NO_SEMANTIC, **init_args}})


def zero_activations(module):
    """Activations of a 1 x 2 x 2 latent with tiny conditioning: enough for the memory rules."""
    with MODE:
        return measure_activations(module.dit, 1, (2, 2), text_tokens=1, image_tokens=1)


def test_parameters_match_the_closed_form_of_the_debug_preset():
    cfg = DIT_PRESETS["debug"]
    d, hidden = cfg.inner_dim, int(cfg.inner_dim * cfg.mlp_ratio)
    module = build()
    blocks = [m for m in module.dit.modules() if isinstance(m, (DualStreamBlock, SingleStreamBlock))]
    for block in blocks:
        closed = (dual_block_params if isinstance(block, DualStreamBlock) else single_block_params)(
            d, cfg.attention_head_dim, hidden)
        assert sum(p.numel() for p in block.parameters()) == closed
    plan = make_plan(module, zero_activations(module))
    assert plan.params_total == plan.params_trainable == sum(p.numel() for p in module.parameters())
    # All trained: fp32 master weights, fp32 grads, two fp32 AdamW states.
    assert (plan.weights, plan.gradients, plan.optimizer) == (4 * plan.params_total, 4 * plan.params_total,
                                                               8 * plan.params_total)


def test_optimizer_state_covers_trainable_parameters_only():
    cfg = DIT_PRESETS["debug"]
    d, out = cfg.inner_dim, cfg.patch_size**2 * cfg.patch_size_t * cfg.out_channels
    module = build(trainable="output_layer")
    trained = linear(d, 2 * d) + linear(d, out)  # norm_out + proj_out
    plan = make_plan(module, zero_activations(module), precision="bf16-mixed")
    assert plan.params_trainable == trained
    assert plan.optimizer == 8 * trained and plan.gradients == 4 * trained
    assert plan.weights == 2 * (plan.params_total - trained) + 4 * trained  # frozen base in bf16


def test_fsdp_divides_state_and_adds_one_gathered_block():
    cfg = DIT_PRESETS["debug"]
    d, hidden = cfg.inner_dim, int(cfg.inner_dim * cfg.mlp_ratio)
    module = build()
    acts = zero_activations(module)
    single = make_plan(module, acts)
    sharded = make_plan(module, acts, strategy="fsdp", devices=4)
    assert sharded.weights == single.weights // 4 and sharded.optimizer == single.optimizer // 4
    assert sharded.gradients == single.gradients // 4
    assert sharded.gathered_block == 2 * dual_block_params(d, cfg.attention_head_dim, hidden)  # the larger one
    ddp = make_plan(module, acts, strategy="ddp", devices=4)
    assert ddp.total == single.total
    with pytest.raises(PlanError, match="--devices"):
        make_plan(module, acts, strategy="single", devices=2)


def test_generate_offload_keeps_two_blocks():
    module = build("toy")
    acts = zero_activations(module)
    full = make_plan(module, acts, mode="generate")
    offload = make_plan(module, acts, mode="generate", offload=True)
    assert full.weights == 2 * full.params_total and full.gradients == full.optimizer == 0
    blocks = [sum(p.numel() for p in m.parameters()) for m in module.dit.modules()
              if isinstance(m, (DualStreamBlock, SingleStreamBlock))]
    assert offload.weights == full.weights - 2 * sum(blocks) + 2 * 2 * max(blocks)


def test_activations_scale_with_the_window_and_shrink_with_checkpointing():
    module = build("toy")

    def measure(window: int):
        with MODE:
            return measure_activations(module.dit, window, (16, 16), text_tokens=4, image_tokens=4)

    big, small = measure(8), measure(4)
    assert all(b > 0 for b in big.blocks) and big.other > 0
    assert big.tokens["noisy"] == 8 * 64 and small.tokens["noisy"] == 4 * 64
    ratio = sum(small.blocks) / sum(big.blocks)
    # Block saves are linear in the tokens; history and conditioning tokens stay, so a bit more than half.
    tokens = (small.tokens["video"] + 8) / (big.tokens["video"] + 8)
    assert ratio == pytest.approx(tokens, rel=0.05) and ratio < 0.7, (ratio, tokens)
    assert big.checkpointed < big.full
    assert sum(big.block_inputs) < sum(big.blocks)



def test_frozen_blocks_save_nothing_and_checkpointing_adds_nothing():
    # Only the output layer trains: no gradient flows through the blocks, so neither pass keeps block tensors
    # (checkpoint frames of frozen blocks are freed), and repeated measurements agree (no storage-address reuse).
    module = build("toy", trainable="output_layer")

    def measure():
        with MODE:
            return measure_activations(module.dit, 4, (16, 16), text_tokens=4, image_tokens=4)

    first, second = measure(), measure()
    assert sum(first.blocks) == 0 and first.other > 0
    assert first.checkpointed == first.full
    assert (second.full, second.checkpointed) == (first.full, first.checkpointed)

def test_plan_main_prints_a_table_and_json(capsys):
    plan_main(["--model", "debug", "--latent", "8", "8"])
    table = capsys.readouterr().out
    for row in ("parameters (total)", "AdamW state", "activations / section, ckpt", "total per GPU"):
        assert row in table
    plan_main(["--model", "debug", "--latent", "8", "8", "--strategy", "fsdp", "--devices", "2", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["strategy"] == "fsdp" and data["devices"] == 2
    assert data["total"] == (data["weights"] + data["gradients"] + data["optimizer"] + data["gathered_block"]
                             + data["activations"])


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(SystemExit, match="lvg plan: error: --config .*missing.yaml: no such file"):
        lvg_main(["plan", "--config", str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {devices: 1}\n")
    with pytest.raises(SystemExit, match="lvg plan: error: .*model"):
        lvg_main(["plan", "--config", str(bad)])
    bad.write_text("model:\n  class_path: lvg.training.TeacherForcingModule\n  init_args: {dit: nope}\n"
                   "data: {class_path: lvg.data.datamodule.ToyWorldDataModule}\n")
    with pytest.raises(SystemExit, match="lvg plan: error: .*nope"):
        lvg_main(["plan", "--config", str(bad)])
    with pytest.raises(SystemExit, match="exactly one of --config"):
        lvg_main(["plan"])


def test_falls_back_to_the_analytic_formula_and_says_so(monkeypatch, capsys):
    def unsupported(*args, **kwargs):
        raise NotImplementedError("an op without a fake kernel")

    monkeypatch.setattr("lvg.plan.measure_activations", unsupported)
    plan_main(["--model", "debug", "--latent", "8", "8", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["activation_method"].startswith("analytic per-block formula")
    assert "an op without a fake kernel" in data["activation_method"]
    assert 0 < data["activations_checkpointed"] < data["activations_full"]
