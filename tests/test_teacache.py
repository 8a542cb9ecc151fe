"""TeaCache: the published skip rule, exactness when off, fewer block passes when on, per-section/branch caches."""

import numpy as np
import pytest
import torch

from lvg.config import DiTConfig
from lvg.models.memory_pack import MemoryPackConfig
from lvg.sampling import teacache
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from lvg.sampling.teacache import HUNYUAN_VIDEO_COEFFICIENTS, TeaCache
from toy_setup import DEBUG_FOR_PIXEL4, pixel4_encoders, start_image

CFG = DiTConfig.from_name("debug", **DEBUG_FOR_PIXEL4)
STEPS = 10


def make_pipeline(dit, **sampling):
    return LongVideoPipeline(dit, MemoryPackConfig(window=3, rope_time_mode="absolute"), pixel4_encoders(),
                             sampling=SamplingConfig(steps=STEPS, **sampling))


def count_block_passes(dit):
    """Counter of full block passes (forward calls of the first block)."""
    counter = {"n": 0}
    dit.transformer_blocks[0].register_forward_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter


@pytest.fixture(scope="module")
def dit(make_dit):
    return make_dit(std=0.05, **DEBUG_FOR_PIXEL4)


@pytest.fixture(scope="module")
def plain(dit):
    return make_pipeline(dit)(start_image(), ["a red circle"], num_sections=2, fps=8, progress=False)


def test_skip_rule_accumulates_the_rescaled_change_and_reuses_the_residual(dit):
    """Unchanged input: each call adds poly(0) = 0.0961 < 0.15, so every second call recomputes."""
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(1, 6, CFG.inner_dim, generator=g), torch.randn(1, 4, CFG.inner_dim, generator=g)
    temb = torch.randn(1, CFG.inner_dim, generator=g)
    calls = []

    def run_blocks(x, c, temb, mask, rope):
        calls.append(len(calls))
        return 2 * x, c + 1

    cache = TeaCache(dit, threshold=0.15, num_steps=6)
    outs = [cache(run_blocks, x, c, temb, None, None) for _ in range(6)]
    assert np.poly1d(HUNYUAN_VIDEO_COEFFICIENTS)(0.0) == pytest.approx(0.0961, abs=1e-4)
    assert cache.computed == len(calls) == 4  # steps 0, 2, 4 by the rule, 5 as the last step
    for i, (out_x, out_c) in enumerate(outs):
        assert torch.allclose(out_x, 2 * x)  # the skipped steps add the cached residual x
        assert torch.equal(out_c, c + 1 if i in (0, 2, 4, 5) else c)


def test_off_and_a_vanishing_threshold_are_exact(dit, plain):
    tiny = make_pipeline(dit, teacache_threshold=1e-12)
    passes = count_block_passes(tiny.dit)
    out = tiny(start_image(), ["a red circle"], num_sections=2, fps=8, progress=False)
    tiny.dit.transformer_blocks[0]._forward_hooks.clear()
    assert passes["n"] == 2 * STEPS and torch.equal(out, plain)


def test_positive_threshold_skips_steps_and_stays_close(dit, plain):
    pipe = make_pipeline(dit, teacache_threshold=0.3)
    passes = count_block_passes(pipe.dit)
    out = pipe(start_image(), ["a red circle"], num_sections=2, fps=8, progress=False)
    pipe.dit.transformer_blocks[0]._forward_hooks.clear()
    assert 4 <= passes["n"] < 2 * STEPS  # at least the first and last step of each section
    error = (out.float() - plain.float()).abs()
    assert error.max() > 0 and error.mean() < 4  # uint8 frames: lossy but close


def test_caches_are_fresh_per_section_and_per_cfg_branch(dit, monkeypatch):
    log = []  # (cache, call index, computed): holding the caches keeps a freed one's id from being reused
    call = TeaCache.__call__

    def recording(self, *args):
        before = self.computed
        out = call(self, *args)
        log.append((self, self.calls - 1, self.computed > before))
        return out

    monkeypatch.setattr(TeaCache, "__call__", recording)
    pipe = make_pipeline(dit, teacache_threshold=0.5, cfg_scale=3.0)
    pipe(start_image(), ["a red circle"], num_sections=2, fps=8, progress=False)
    caches = list({id(cache): cache for cache, _, _ in log}.values())
    assert len(caches) == 4  # 2 sections x (cond, uncond)
    for cache in caches:
        steps = [(i, computed) for c, i, computed in log if c is cache]
        assert [i for i, _ in steps] == list(range(STEPS))
        assert steps[0][1] and steps[-1][1]  # the first and last call of a section always recompute
    assert any(not computed for _, _, computed in log)


def test_attach_restores_and_bad_thresholds_are_refused(dit):
    cache = TeaCache(dit, 0.1, 5)
    with teacache.attach(dit, cache):
        assert dit.block_cache is cache
    assert dit.block_cache is None
    with pytest.raises(ValueError, match="teacache_threshold"):
        SamplingConfig(teacache_threshold=0.0)
    with pytest.raises(ValueError, match="threshold must be > 0"):
        TeaCache(dit, -1.0, 5)
