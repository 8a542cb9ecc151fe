"""TeaCache for the PackedDiT: skip all blocks on steps whose input barely changed (LOSSY, opt-in).

TeaCache (Liu et al. 2024, "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model")
as its HunyuanVideo variant, also used by FramePack: at every model call the first block's
modulated input ``modulate(layer_norm(x), shift_msa, scale_msa)`` (shift/scale from the timestep
embedding) is compared with the previous call's by relative L1 distance, the distance is rescaled
with the polynomial fitted for HunyuanVideo and accumulated. While the sum stays below
``threshold`` the blocks are skipped and the video tokens get the cached residual of the last full
pass (output of the last block minus input of the first); once it reaches the threshold, all
blocks run, the residual is cached and the sum restarts. The first and last call of a section
always run the blocks.

One :class:`TeaCache` serves one sequence of ``num_steps`` calls: one section of one CFG branch.
:class:`~lvg.sampling.pipeline.LongVideoPipeline` makes fresh ones per section and branch
(``SamplingConfig.teacache_threshold``). FramePack's default threshold is 0.15 (about 2x faster
at 25 steps); larger thresholds skip more and change the video more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from torch import Tensor

from lvg.models.dit import DualStreamBlock, PackedDiT, layer_norm, modulate
from lvg.models.rope import Rope

HUNYUAN_VIDEO_COEFFICIENTS: tuple[float, ...] = (7.33226126e02, -4.01131952e02, 6.75869174e01, -3.14987800e00,
                                                 9.61237896e-02)
"""TeaCache's rescaling polynomial for HunyuanVideo (highest power first, as ``np.poly1d``)."""

BlockRunner = Callable[[Tensor, Tensor, Tensor, "Tensor | None", Rope], tuple[Tensor, Tensor]]
"""``PackedDiT.run_blocks``: ``(x, c, temb, mask, rope) -> (x, c)``."""


class TeaCache:
    """Block cache of one section and one CFG branch; install with :func:`attach`.

    Args:
        dit: the model whose first block defines the modulated input.
        threshold: accumulated rescaled relative-L1 change at which the blocks run again (> 0).
        num_steps: model calls in the section; the last one always runs the blocks.
        coefficients: rescaling polynomial, highest power first.
    """

    def __init__(self, dit: PackedDiT, threshold: float, num_steps: int,
                 coefficients: tuple[float, ...] = HUNYUAN_VIDEO_COEFFICIENTS):
        if not threshold > 0:
            raise ValueError(f"TeaCache threshold must be > 0 (None turns TeaCache off), got {threshold}.")
        if num_steps < 1:
            raise ValueError(f"TeaCache num_steps must be >= 1, got {num_steps}.")
        blocks = (*dit.transformer_blocks, *dit.single_transformer_blocks)
        if not blocks:
            raise ValueError("TeaCache needs a PackedDiT with at least one block.")
        self.first_block = blocks[0]
        self.threshold, self.num_steps = threshold, num_steps
        self.rescale = np.poly1d(coefficients)
        self.calls = 0  # model calls seen
        self.computed = 0  # calls that ran the blocks
        self.accumulated = 0.0
        self.previous_input: Tensor | None = None  # modulated input of the last call
        self.residual: Tensor | None = None  # (B, N, D): blocks' output minus input of the last full pass

    def modulated_input(self, x: Tensor, temb: Tensor) -> Tensor:
        """The first block's adaLN-modulated attention input ``(B, N, D)``."""
        block = self.first_block
        shift, scale = block.norm1(temb)[:2] if isinstance(block, DualStreamBlock) else block.norm(temb)[:2]
        return modulate(layer_norm(x), shift, scale)

    def __call__(self, run_blocks: BlockRunner, x: Tensor, c: Tensor, temb: Tensor, mask: Tensor | None,
                 rope: Rope) -> tuple[Tensor, Tensor]:
        """Run or skip the blocks. On a skip the conditioning stream is returned unchanged: the
        model's output reads only the video tokens after the last block."""
        current = self.modulated_input(x, temb)
        previous, self.previous_input = self.previous_input, current
        step, self.calls = self.calls, self.calls + 1
        compute = step == 0 or step >= self.num_steps - 1 or self.residual is None
        if previous is None or previous.shape != current.shape:
            compute = True  # a new input layout (never within one section) has no usable cache
        if not compute:
            change = ((current - previous).abs().mean() / previous.abs().mean()).item()
            self.accumulated += float(self.rescale(change))
            compute = self.accumulated >= self.threshold
        if not compute:
            return x + self.residual, c
        self.accumulated = 0.0
        self.computed += 1
        out, c = run_blocks(x, c, temb, mask, rope)
        self.residual = out - x
        return out, c


@contextmanager
def attach(dit: PackedDiT, cache: TeaCache | None) -> Iterator[None]:
    """Route ``dit``'s blocks through ``cache`` (None: plain blocks) inside the ``with`` body."""
    previous, dit.block_cache = dit.block_cache, cache
    try:
        yield
    finally:
        dit.block_cache = previous
