"""LoRA on the DiT blocks: identity start, merge, musubi-tuner/kohya export + load, training only the adapters."""

import lightning as L
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from dit_inputs import make_inputs
from lvg.cli import export_lora_main as export_main
from lvg.models.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    kohya_name,
    load_lora,
    merge_lora,
    save_lora,
)
from lvg.training import DirectForcingModule, TeacherForcingModule
from toy_setup import datamodule, module, trainer

DUAL = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
        "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"]
SINGLE = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"]
# The DiTs are make_dit(std=0.2): the debug preset with every weight random (its init zeroes the output, which
# would hide any change).


def randomize_adapters(dit, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in dit.modules():
            if isinstance(layer, LoRALinear):
                layer.lora_up.weight.copy_(torch.randn(layer.lora_up.weight.shape, generator=gen) * 0.1)


def test_targets_are_the_block_linears_without_norms_and_lora_starts_as_identity(make_dit):
    dit, inputs = make_dit(std=0.2), make_inputs()
    before = dit(**inputs)
    paths = apply_lora(dit, LoRAConfig(rank=4, alpha=8.0))
    assert paths == [f"transformer_blocks.0.{p}" for p in DUAL] + [f"single_transformer_blocks.0.{p}" for p in SINGLE]
    assert not any("norm" in p for p in paths)  # adaLN modulation (norm1.linear, norm.linear) stays as it is
    assert isinstance(dit.x_embedder.proj, nn.Conv3d) and not isinstance(dit.proj_out, LoRALinear)
    layer = dit.transformer_blocks[0].attn.to_q
    assert layer.lora_down.weight.shape == (4, 20) and layer.lora_up.weight.shape == (20, 4) and layer.scale == 2.0
    assert torch.count_nonzero(layer.lora_up.weight) == 0 and torch.count_nonzero(layer.lora_down.weight) > 0
    assert torch.equal(dit(**inputs), before)  # B = 0: identity
    # base tensors keep FramePack's names, so pretrained checkpoints load into a LoRA model unchanged
    assert "transformer_blocks.0.attn.to_q.weight" in dit.state_dict()


def test_target_patterns_and_bad_patterns(make_dit):
    dit = make_dit(std=0.2)
    paths = apply_lora(dit, LoRAConfig(targets=(r".*attn\.to_[qkv]",)))
    assert paths == [f"{b}.0.attn.to_{x}" for b in ("transformer_blocks", "single_transformer_blocks") for x in "qkv"]
    with pytest.raises(ValueError, match="match no Linear layer"):
        apply_lora(make_dit(std=0.2), LoRAConfig(targets=("nothing",)))
    with pytest.raises(ValueError, match="invalid regex"):
        LoRAConfig(targets=("(",))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRAConfig(rank=0)


def test_merged_forward_equals_unmerged_and_plain_linears_come_back(make_dit):
    dit, inputs = make_dit(std=0.2), make_inputs()
    keys = set(dit.state_dict())
    apply_lora(dit, LoRAConfig(rank=4, alpha=2.0))
    randomize_adapters(dit)
    with torch.no_grad():
        unmerged = dit(**inputs)
        assert not torch.allclose(unmerged, make_dit(std=0.2)(**inputs), atol=1e-3)  # the adapters do something
        assert merge_lora(dit) == len(DUAL) + len(SINGLE)
        merged = dit(**inputs)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert not any(isinstance(m, LoRALinear) for m in dit.modules())
    assert set(dit.state_dict()) == keys  # a plain FramePack state dict again


def test_export_uses_musubi_kohya_keys_and_round_trips(tmp_path, make_dit):
    dit, inputs = make_dit(std=0.2), make_inputs()
    apply_lora(dit, LoRAConfig(rank=4, alpha=2.0))
    randomize_adapters(dit)
    path = save_lora(dit, tmp_path / "lora.safetensors")
    assert kohya_name("transformer_blocks.0.attn.to_q") == "lora_unet_transformer_blocks_0_attn_to_q"
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["ss_network_dim"] == "4"
        assert f.get_tensor("lora_unet_transformer_blocks_0_attn_to_q.alpha").item() == 2.0
    assert {"lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight",
            "lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight",
            "lora_unet_transformer_blocks_0_ff_context_net_0_proj.lora_up.weight",
            "lora_unet_single_transformer_blocks_0_proj_mlp.alpha"} <= keys
    assert len(keys) == 3 * (len(DUAL) + len(SINGLE))
    with torch.no_grad():
        expected = dit(**inputs)
        fresh = make_dit(std=0.2)  # same base weights, no LoRA yet: load_lora creates the layers from the file
        assert len(load_lora(fresh, path)) == len(DUAL) + len(SINGLE)
        torch.testing.assert_close(fresh(**inputs), expected, rtol=0, atol=0)
        again = make_dit(std=0.2)
        apply_lora(again, LoRAConfig(rank=4, alpha=7.0))  # existing layers take the file's weights and alpha
        load_lora(again, path)
        torch.testing.assert_close(again(**inputs), expected, rtol=0, atol=0)


def test_load_lora_reads_the_diffusers_peft_layout_with_alpha_equal_rank(tmp_path, make_dit):
    from safetensors.torch import save_file

    dit, inputs = make_dit(std=0.2), make_inputs()
    apply_lora(dit, LoRAConfig(rank=4, alpha=4.0, targets=(r".*attn\.to_q",)))
    randomize_adapters(dit)
    layers = {p: m for p, m in dit.named_modules() if isinstance(m, LoRALinear)}
    peft = {f"transformer.{p}.lora_{ab}.weight": (m.lora_down if ab == "A" else m.lora_up).weight.detach().clone()
            for p, m in layers.items() for ab in "AB"}
    save_file(peft, str(tmp_path / "peft.safetensors"))
    fresh = make_dit(std=0.2)
    assert sorted(load_lora(fresh, tmp_path / "peft.safetensors")) == sorted(layers)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs), dit(**inputs), rtol=0, atol=0)


def test_load_lora_refuses_foreign_files(tmp_path, make_dit):
    from safetensors.torch import save_file

    save_file({"lora_unet_blocks_9_qkv.lora_down.weight": torch.zeros(4, 20),
               "lora_unet_blocks_9_qkv.lora_up.weight": torch.zeros(20, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="match no Linear of the DiT blocks"):
        load_lora(make_dit(std=0.2), tmp_path / "other.safetensors")
    save_file({"lora_unet_transformer_blocks_0_attn_to_q.lora_mid.weight": torch.zeros(4, 20)},
              str(tmp_path / "locon.safetensors"))
    with pytest.raises(ValueError, match="unexpected key"):
        load_lora(make_dit(std=0.2), tmp_path / "locon.safetensors")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_lora(make_dit(std=0.2), tmp_path / "none.safetensors")


def test_stage_module_trains_only_the_adapters_unless_trainable_says_otherwise():
    lora = LoRAConfig(rank=2)
    model = module(TeacherForcingModule, lora=lora)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_down." in n or ".lora_up." in n for n in trainable)
    assert len(trainable) == 2 * (len(DUAL) + len(SINGLE))
    more = module(TeacherForcingModule, lora=lora, trainable="lora+output_layer")
    extra = {n for n, p in more.named_parameters() if p.requires_grad} - trainable
    assert extra == {"dit.norm_out.linear.weight", "dit.norm_out.linear.bias", "dit.proj_out.weight",
                     "dit.proj_out.bias"}
    stage2 = module(DirectForcingModule, lora=lora)  # after a LoRA stage 1: adapters load and stay frozen
    assert {n for n, p in stage2.named_parameters() if p.requires_grad} == extra
    with pytest.raises(ValueError, match="'lora' needs LoRA layers"):
        module(TeacherForcingModule, trainable="lora")


def test_lora_fit_changes_only_adapters_and_its_checkpoint_loads(toy_root, tmp_path):
    L.seed_everything(0)
    model = module(TeacherForcingModule, lora=LoRAConfig(rank=2, alpha=4.0))
    with torch.no_grad():  # "pretrained" weights: the zero-initialised gates and output would block every gradient
        for _name, p in model.dit.named_parameters():
            if not p.requires_grad:
                p.normal_(0, 0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, max_steps=2, callbacks=[checkpoint], enable_checkpointing=True).fit(model, datamodule(toy_root))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_down." in k or ".lora_up." in k for k in changed)
    assert any(".lora_up." in k for k in changed)  # B left zero: the adapters really train
    path = tmp_path / "ckpt" / "last.ckpt"
    restored = TeacherForcingModule.load_from_checkpoint(path)  # hparams (with LoRAConfig) rebuild the structure
    assert restored.hparams.lora == LoRAConfig(rank=2, alpha=4.0)
    for key, value in after.items():
        assert torch.equal(restored.state_dict()[key], value), key
    started = module(TeacherForcingModule, lora=LoRAConfig(rank=2, alpha=4.0), init_from=str(path))
    assert all(torch.equal(started.state_dict()[k], v) for k, v in after.items())
    # `lvg export-lora`: the checkpoint's adapters without building the model == save_lora of the trained model
    export_main([str(path), str(tmp_path / "from_ckpt.safetensors")])
    save_lora(model.dit, tmp_path / "from_model.safetensors")
    files = [load_file(str(tmp_path / f"from_{x}.safetensors")) for x in ("ckpt", "model")]
    assert files[0].keys() == files[1].keys() and all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    # the same from a sharded (FSDP) checkpoint directory: Lightning's layout, shards + meta.pt
    import torch.distributed.checkpoint as dcp

    sharded = tmp_path / "sharded.ckpt"
    dcp.save({"state_dict": after}, checkpoint_id=str(sharded), no_dist=True)
    torch.save({"hyper_parameters": dict(model.hparams)}, sharded / "meta.pt")
    export_main([str(sharded), str(tmp_path / "from_sharded.safetensors")])
    from_sharded = load_file(str(tmp_path / "from_sharded.safetensors"))
    assert from_sharded.keys() == files[1].keys() and all(torch.equal(from_sharded[k], files[1][k]) for k in files[1])
    with pytest.raises(ValueError, match="was not trained with LoRA"):
        plain = tmp_path / "plain.ckpt"
        torch.save({"state_dict": {}, "hyper_parameters": {"lora": None}}, plain)
        export_main([str(plain), str(tmp_path / "x.safetensors")])
