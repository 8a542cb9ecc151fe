"""Checkpoint loading: diffusers' save_pretrained layout, single files, hub ids, clear errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from dit_inputs import make_inputs
from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT

diffusers = pytest.importorskip("diffusers", reason="the `test` extra installs the diffusers oracle")

CFG = DiTConfig.from_name("debug")


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1)
    return diffusers.HunyuanVideoFramepackTransformer3DModel(**CFG.to_dict()).eval()


@pytest.fixture(scope="module")
def sharded_dir(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("f1_sharded")
    reference.save_pretrained(path, max_shard_size="20KB", safe_serialization=True)
    return path


def outputs(model, seed=0):
    with torch.no_grad():
        inputs = make_inputs(batch=2, text_len=9, valid=(9, 6), seed=seed)
        out = model(**inputs)
        return out[0] if isinstance(out, tuple) else out


def reference_outputs(reference, seed=0):
    with torch.no_grad():
        return reference(**make_inputs(batch=2, text_len=9, valid=(9, 6), seed=seed), return_dict=False)[0]


def test_sharded_save_pretrained_loads_and_reproduces(reference, sharded_dir):
    assert len(list(sharded_dir.glob("*.safetensors"))) > 1, "the fixture must really be sharded"
    assert list(sharded_dir.glob("*.safetensors.index.json"))
    model = PackedDiT.from_pretrained(sharded_dir)
    assert model.config == CFG
    assert (outputs(model) - reference_outputs(reference)).abs().max() <= 1e-5


def test_from_pretrained_single_file_and_dtype(reference, tmp_path):
    file = tmp_path / "f1.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(file))
    with pytest.raises(ValueError, match="no config.json found; pass config="):
        PackedDiT.from_pretrained(str(file))
    model = PackedDiT.from_pretrained(str(file), config="debug")
    assert (outputs(model) - reference_outputs(reference)).abs().max() <= 1e-5
    bf16 = PackedDiT.from_pretrained(str(file), config=CFG, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_hub_id_downloads_only_json_and_safetensors(monkeypatch, sharded_dir):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, allow_patterns))
        return str(sharded_dir.parent)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = PackedDiT.from_pretrained("someone/framepack-f1-tiny", subfolder=sharded_dir.name)
    assert calls == [("someone/framepack-f1-tiny", [f"{sharded_dir.name}/*.json", f"{sharded_dir.name}/*.safetensors"])]
    assert model.config == CFG


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    # HunyuanVideo T2V (no history embedders, no image projection) is not a packed FramePack model.
    torch.manual_seed(0)
    other = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    )
    other.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing keys \d+ \(clean_x_embedder\.proj\.bias") as err:
        PackedDiT.from_pretrained(tmp_path, config="debug")
    assert "image_projection" in str(err.value)


def test_wrong_config_reports_shape_mismatch(sharded_dir):
    with pytest.raises(ValueError, match=r"shape mismatches .*x_embedder\.proj\.weight: expected \(128, 12, 1, 2, 2\)"):
        PackedDiT.from_pretrained(sharded_dir, config="toy")


def test_bad_config_json(tmp_path, reference):
    reference.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_experts": 4}))
    with pytest.raises(ValueError, match="config.json: unknown DiT config key 'num_experts'"):
        PackedDiT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "image_condition_type": "token_replace"}))
    with pytest.raises(ValueError, match="image_condition_type='token_replace' is not supported"):
        PackedDiT.from_pretrained(tmp_path)


def test_missing_path_and_missing_shard(tmp_path, sharded_dir):
    with pytest.raises(ValueError, match="does not exist"):
        PackedDiT.from_pretrained(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in sharded_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    next(broken.glob("*-00001-of-*.safetensors")).unlink()
    with pytest.raises(ValueError, match="lists shards that do not exist"):
        PackedDiT.from_pretrained(broken)


def test_non_strict_load_keeps_initial_values_and_warns(reference, tmp_path):
    state = {k: v.contiguous() for k, v in reference.state_dict().items() if not k.startswith("proj_out")}
    file = tmp_path / "partial.safetensors"
    save_file(state, str(file))
    with pytest.raises(ValueError, match=r"missing keys 2 \(proj_out.bias, proj_out.weight\)"):
        PackedDiT.from_pretrained(file, config=CFG)
    with pytest.warns(UserWarning, match="missing keys 2"):
        model = PackedDiT.from_pretrained(file, config=CFG, strict=False)
    assert torch.equal(model.norm_out.linear.weight, reference.norm_out.linear.weight)
    assert torch.equal(model.proj_out.weight, torch.zeros_like(model.proj_out.weight))
