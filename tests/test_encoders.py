"""Embedded default encoders: exact codec round trip, deterministic text/image features."""

import pytest
import torch

from lvg.data.toy_world import ToyWorldConfig, render_video, sample_video_spec
from lvg.models.encoders import ImageEncoder, PixelCodec, TextEncoder, ToyImageEncoder, ToyTextEncoder, VideoCodec


def test_pixel_codec_is_exactly_invertible():
    codec = PixelCodec(4)
    assert isinstance(codec, VideoCodec)
    video = torch.randint(0, 256, (2, 5, 3, 16, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    latents = codec.encode(video)
    assert latents.shape == (2, 48, 5, 4, 6)
    assert torch.equal(codec.decode(latents), video)
    # space-to-depth: channel c*16 + i*4 + j of latent (y, x) is pixel (4y + i, 4x + j) of colour c, normalised
    pixel = video[1, 4, 2, 4 * 2 + 1, 4 * 5 + 3].float() / 127.5 - 1
    torch.testing.assert_close(latents[1, 2 * 16 + 1 * 4 + 3, 4, 2, 5],
                               (pixel - codec.shift_factor) * codec.scaling_factor)
    raw = PixelCodec(4, scaling_factor=1.0, shift_factor=0.0).encode(video)
    assert raw.min() >= -1 and raw.max() <= 1 and torch.equal(PixelCodec(4, 1.0, 0.0).decode(raw), video)


def test_pixel_codec_latents_are_normalised_on_the_toy_world():
    """The declared factors give toy-world latents ~zero mean and unit std (the flow's noise has std 1)."""
    config = ToyWorldConfig(num_videos=4)
    frames = torch.cat([torch.from_numpy(render_video(sample_video_spec(config, i))[0]) for i in range(4)])
    latents = PixelCodec(2).encode(frames.permute(0, 3, 1, 2)[None])
    assert abs(latents.mean().item()) < 0.25 and 0.8 < latents.std().item() < 1.25
    raw = PixelCodec(2, scaling_factor=1.0, shift_factor=0.0).encode(frames.permute(0, 3, 1, 2)[None])
    assert raw.std().item() < 0.35  # what the model saw before: noise std 1 drowned the signal


def test_pixel_codec_bad_input():
    codec = PixelCodec(4)
    with pytest.raises(ValueError, match="uint8 video"):
        codec.encode(torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by the codec factor 4"):
        codec.encode(torch.zeros(1, 2, 3, 8, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 48, F, h, w\)"):
        codec.decode(torch.zeros(1, 12, 2, 4, 4))
    with pytest.raises(ValueError, match="scaling_factor must be > 0"):
        PixelCodec(4, scaling_factor=0.0)


def test_toy_text_encoder_is_deterministic_order_aware_and_masked():
    enc = ToyTextEncoder(dim=64)
    assert isinstance(enc, TextEncoder)
    a = enc.encode(["a red circle and a blue square", ""])
    b = ToyTextEncoder(dim=64).encode(["a red circle and a blue square", ""])
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)
    assert a.tokens.shape == (2, 8, 64) and a.mask.sum(1).tolist() == [8, 1]  # begin token + 7 words; empty -> 1
    assert not a.tokens[1, 1:].any()  # padding is zero
    swapped = enc.encode(["a blue circle and a red square"])
    assert not torch.allclose(swapped.tokens, a.tokens[:1])  # word order and position matter
    torch.testing.assert_close(swapped.pooled, a.pooled[:1])  # the pooled feature is a bag of words
    assert enc.encode(["word " * 100]).tokens.shape[1] == enc.max_tokens


def test_toy_image_encoder():
    enc = ToyImageEncoder()
    assert isinstance(enc, ImageEncoder)
    images = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    images[:, 0, :16, :16] = 0  # top-left token's red channel
    tokens = enc.encode(images)
    assert tokens.shape == (1, 16, 48)
    assert torch.equal(tokens[0, 0, :16], torch.full((16,), -1.0)) and tokens[0, 1:].eq(1).all()
