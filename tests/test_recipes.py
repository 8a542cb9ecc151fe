"""The FramePack-F1 recipes parse and build their 13B model on the meta device (nothing is allocated)."""

from pathlib import Path

import pytest
import torch
import yaml

from lvg.cli import LvgCLI, model_info
from lvg.config import DiTConfig
from lvg.models.lora import LoRALinear
from lvg.models.semantic_pack import SemanticPack, SemanticPackConfig
from lvg.training import DirectForcingModule, TeacherForcingModule
from lvg.training.parallel import FSDPStrategy

RECIPES = Path(__file__).parents[1] / "configs" / "framepack_f1"
F1_PARAMETERS = 12_874_314_816  # `lvg info --model framepack-f1`
F1_HUB_ID = "lllyasviel/FramePack_F1_I2V_HY_20250503"


def semantic_pack_parameters() -> int:
    with torch.device("meta"):
        semantic_pack = SemanticPack(SemanticPackConfig(), DiTConfig.from_name("framepack-f1"))
    return sum(p.numel() for p in semantic_pack.parameters())


def build(recipe: str):
    """The recipe through the CLI parser, on CPU and the meta device, without downloading weights."""
    with torch.device("meta"):
        return LvgCLI(args=["--config", str(RECIPES / recipe), "--model.init_args.pretrained=null",
                            "--model.init_args.init_from=null", "--trainer.accelerator=cpu", "--trainer.devices=1",
                            "--trainer.logger=false"], run=False)


@pytest.mark.parametrize("recipe", ["stage1.yaml", "stage1_lora.yaml", "stage2.yaml"])
def test_recipe_builds_the_paper_setting_on_meta(recipe):
    raw = LvgCLI.read(["--config", str(RECIPES / recipe)]).as_dict()  # as `lvg fit` reads it (base: included)
    cli = build(recipe)
    model, data = cli.model, cli.datamodule
    assert all(p.device.type == "meta" for p in model.parameters())  # 13B never allocated
    lora = sum(p.numel() for m in model.dit.modules() if isinstance(m, LoRALinear)
               for p in (*m.lora_down.parameters(), *m.lora_up.parameters()))
    base = sum(p.numel() for p in model.dit.parameters()) - lora
    assert base == F1_PARAMETERS == model_info("framepack-f1")["parameters"]
    assert sum(p.numel() for p in model.parameters()) == F1_PARAMETERS + semantic_pack_parameters() + lora
    assert model.memory_pack_config.window == 9 and model.memory_pack_config.rope_time_mode == "absolute"
    # Stage 2 trains only the output layer: no gradient flows through the frozen blocks, nothing to checkpoint.
    checkpointing = recipe.startswith("stage1")
    assert model.hparams.gradient_checkpointing == model.dit.gradient_checkpointing == checkpointing
    assert cli.trainer.precision == "bf16-mixed"
    assert data.frame_size == (480, 832) and data.batch_size == 1 and data.min_latent_frames == 10
    assert raw["trainer"]["accelerator"] == "gpu"
    trainable = sum(p.numel() for p in model.trainable_parameters())
    if recipe.startswith("stage1"):
        assert isinstance(model, TeacherForcingModule)
        assert raw["model"]["init_args"]["pretrained"] == F1_HUB_ID
        assert isinstance(cli.trainer.strategy, FSDPStrategy) and raw["trainer"]["devices"] == 8
        assert cli.trainer.strategy.mp_policy.param_dtype == torch.bfloat16
    if recipe == "stage1.yaml":
        assert model.hparams.lr == 1e-5 and model.hparams.lora is None and lora == 0
        assert trainable == F1_PARAMETERS + semantic_pack_parameters()
    if recipe == "stage1_lora.yaml":
        # rank r on every block Linear except the adaLN modulation: r * sum(in + out) over
        # 20 dual blocks (8 attention 3072x3072, 4 MLP 3072<->12288) and 40 single blocks
        # (q/k/v, proj_mlp 3072->12288, proj_out 15360->3072).
        rank = model.dit.transformer_blocks[0].attn.to_q.rank
        per_dual = 8 * 6144 + 4 * 15360
        per_single = 3 * 6144 + 15360 + 18432
        assert lora == rank * (20 * per_dual + 40 * per_single) == 275_251_200
        assert trainable == lora + semantic_pack_parameters()
    if recipe == "stage2.yaml":
        assert isinstance(model, DirectForcingModule) and model.hparams.lr == 1e-5
        assert raw["model"]["init_args"]["init_from"] == "runs/f1_stage1/checkpoints/last.ckpt"
        assert raw["trainer"]["devices"] == 1 and raw["trainer"]["strategy"] == "auto"
        assert trainable == model_info("framepack-f1")["direct_forcing_trainable"]
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {
            "dit.norm_out.linear.weight", "dit.norm_out.linear.bias", "dit.proj_out.weight", "dit.proj_out.bias"}


def test_recipes_read_the_shards_that_the_prepare_config_writes():
    prepare = yaml.safe_load((RECIPES.parent / "prepare" / "framepack_f1.yaml").read_text())["data"]
    for recipe in ("stage1.yaml", "stage1_lora.yaml", "stage2.yaml"):
        data = yaml.safe_load((RECIPES / recipe).read_text())["data"]
        assert data["class_path"] == prepare["class_path"]
        for key in ("shard_dir", "frame_size", "min_latent_frames"):
            assert data["init_args"][key] == prepare["init_args"][key], (recipe, key)


def test_fit_trains_fp32_master_weights_of_a_bf16_checkpoint():
    """FramePack-F1 ships bf16; what trains is upcast at fit setup, frozen weights stay bf16 (memory)."""
    from toy_setup import module

    model = module(DirectForcingModule)
    model.dit.to(torch.bfloat16)  # as loaded from the released checkpoint
    model.setup("fit")
    dtypes = {n: p.dtype for n, p in model.dit.named_parameters()}
    assert dtypes["proj_out.weight"] == dtypes["norm_out.linear.weight"] == torch.float32
    assert dtypes["transformer_blocks.0.attn.to_q.weight"] == torch.bfloat16
