"""Full-size encoder adapters, on tiny random instances of the same diffusers/transformers classes."""

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from hunyuan_tiny import TEMPLATE, tiny_modules
from lvg.models.encoders import Encoders, ImageEncoder, TextEncoder, VideoCodec
from lvg.models.hunyuan import HunyuanTextEncoder, HunyuanVideoVAE, SiglipImageEncoder
from lvg.models.memory_pack import MemoryPackConfig
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig


@pytest.fixture(scope="module")
def encoders():
    m = tiny_modules()
    return Encoders(
        codec=HunyuanVideoVAE(m.vae, tiling=False),
        text=HunyuanTextEncoder(m.llama, m.llama_tokenizer, m.clip, m.clip_tokenizer, max_tokens=8, template=TEMPLATE),
        image=SiglipImageEncoder(m.siglip, m.processor),
        frame_size=(32, 32),
    )


def test_protocols(encoders):
    assert isinstance(encoders.codec, VideoCodec)
    assert isinstance(encoders.text, TextEncoder) and isinstance(encoders.image, ImageEncoder)


def test_vae_4n_minus_3_frames_and_scaling(encoders):
    vae = encoders.codec
    video = torch.randint(0, 256, (1, 5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    latents = vae.encode(video)
    assert latents.shape == (1, 4, 2, 4, 4) and vae.num_latent_frames(5) == 2 and vae.num_pixel_frames(2) == 5
    raw = vae.vae.encode(video.permute(0, 2, 1, 3, 4).float() / 127.5 - 1).latent_dist.mode()
    assert vae.scaling_factor == vae.vae.config.scaling_factor and vae.shift_factor == 0.0  # HunyuanVideo: no shift
    torch.testing.assert_close(latents, raw * vae.vae.config.scaling_factor)
    decoded = vae.decode(latents)
    assert decoded.shape == (1, 5, 3, 32, 32) and decoded.dtype == torch.uint8
    with pytest.raises(ValueError, match="4N - 3 frames"):
        vae.encode(video[:, :4])


def test_text_features_crop_the_template_and_mask_padding(encoders):
    text = encoders.text
    features = text.encode(["a red circle moves", "a blue square"])
    assert features.tokens.shape == (2, 8, 16) and features.pooled.shape == (2, 8)
    assert features.mask.sum(1).tolist() == [5, 4]  # the prompt's words + the template's closing token
    assert not features.tokens[1, 4:].any()
    ids = text.llama_tokenizer(["system describe the video a blue square end"], return_tensors="pt").input_ids
    hidden = text.llama(input_ids=ids, output_hidden_states=True).hidden_states[-3]
    torch.testing.assert_close(features.tokens[1, :4], hidden[0, 4:8], rtol=1e-5, atol=1e-5)


def test_siglip_tokens(encoders):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert encoders.image.encode(images).shape == (2, 16, 8)


def test_pipeline_generates_with_the_full_size_encoder_classes(encoders, tmp_path, make_dit):
    dit = make_dit(text_embed_dim=16, pooled_projection_dim=8, image_proj_dim=8)
    pipe = LongVideoPipeline(dit, MemoryPackConfig(window=2), encoders, sampling=SamplingConfig(steps=2))
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    video = pipe(image, ["a red circle moves"], num_sections=2, fps=30, progress=False)
    assert video.shape == (1, 4 * (1 + 2 * 2) - 3, 32, 32, 3)  # N latents -> 4N - 3 frames, overlaps blended
