"""Embedded default encoders: exact codec round trip, deterministic text/image features."""

import pytest
import torch

from lvg.models.encoders import ImageEncoder, PixelCodec, TextEncoder, ToyImageEncoder, ToyTextEncoder, VideoCodec


def test_pixel_codec_is_exactly_invertible():
    codec = PixelCodec(4)
    assert isinstance(codec, VideoCodec)
    video = torch.randint(0, 256, (2, 5, 3, 16, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    latents = codec.encode(video)
    assert latents.shape == (2, 48, 5, 4, 6)
    assert latents.min() >= -1 and latents.max() <= 1
    assert torch.equal(codec.decode(latents), video)
    # space-to-depth: channel c*16 + i*4 + j of latent (y, x) is pixel (4y + i, 4x + j) of colour c
    assert latents[1, 2 * 16 + 1 * 4 + 3, 4, 2, 5] == video[1, 4, 2, 4 * 2 + 1, 4 * 5 + 3].float() / 127.5 - 1


def test_pixel_codec_bad_input():
    codec = PixelCodec(4)
    with pytest.raises(ValueError, match="uint8 video"):
        codec.encode(torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by the codec factor 4"):
        codec.encode(torch.zeros(1, 2, 3, 8, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 48, F, h, w\)"):
        codec.decode(torch.zeros(1, 12, 2, 4, 4))


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
