"""Block-level CPU offload of the PackedDiT, for sampling the 13B model on one consumer GPU.

The repeated blocks (:attr:`PackedDiT.block_types`, ~all of the 13B parameters) live in CPU
memory (pinned when CUDA is available, so copies are asynchronous); everything else (embedders,
token refiner, output head) sits on the execution device. A forward pre-hook copies a block's
weights to the device just before it runs and a forward hook drops the copy after, so the GPU
holds one block (two with prefetch) at a time. With ``prefetch`` the next block's copy starts on a
side CUDA stream while the current block computes.

Inference only: the device copies are dropped, never written back, so weights must not be
trained while offloaded. Offloaded blocks ignore ``.to()`` / ``.cuda()`` / ``.half()`` on any parent
module, so a Lightning strategy (or any caller) can move the whole model to the GPU and only the
non-block part lands there; :meth:`BlockOffload.remove` lifts that.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lvg.models.dit import PackedDiT


class _Block:
    """One offloaded block: its CPU-resident tensors and, while loaded, their device copies."""

    def __init__(self, module: nn.Module, pin: bool):
        self.module = module
        self.tensors = [*module.parameters(), *module.buffers()]
        self.stored = [t.data.cpu().pin_memory() if pin else t.data.cpu() for t in self.tensors]
        self.loaded: list[Tensor] | None = None
        self.ready: torch.cuda.Event | None = None  # set when the copy was issued on the side stream

    def fetch(self, device: torch.device, stream: torch.cuda.Stream | None) -> None:
        """Issue the copy to ``device`` (on ``stream`` if given); a no-op when already fetched."""
        if self.loaded is not None:
            return
        if stream is None:
            # copy=True: a separate tensor even when the execution device is the CPU (tests, debugging).
            self.loaded = [t.to(device, non_blocking=True, copy=True) for t in self.stored]
            return
        with torch.cuda.stream(stream):
            self.loaded = [t.to(device, non_blocking=True) for t in self.stored]
            self.ready = torch.cuda.Event()
            self.ready.record(stream)

    def load(self, device: torch.device, stream: torch.cuda.Stream | None) -> None:
        """Point the block's tensors at their device copies, waiting for an in-flight prefetch."""
        self.fetch(device, None)
        if self.ready is not None:
            current = torch.cuda.current_stream(device)
            current.wait_event(self.ready)
            for t in self.loaded:  # allocated on the side stream, used on this one
                t.record_stream(current)
            self.ready = None
        for t, loaded in zip(self.tensors, self.loaded):
            t.data = loaded

    def unload(self) -> None:
        for t, stored in zip(self.tensors, self.stored):
            t.data = stored
        self.loaded = None


class BlockOffload:
    """Handle of :func:`enable_block_offload`; :meth:`remove` restores the model to its devices."""

    def __init__(self, dit: PackedDiT, device: torch.device, prefetch: bool):
        self.dit, self.device = dit, device
        cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if prefetch and cuda else None
        modules = [m for m in dit.modules() if isinstance(m, PackedDiT.block_types)]
        self.blocks = [_Block(m, pin=cuda) for m in modules]
        self.original = {id(t): t.device for block in self.blocks for t in block.tensors}
        for block in self.blocks:
            block.unload()
        in_blocks = {id(t) for block in self.blocks for t in block.tensors}
        for t in (*dit.parameters(), *dit.buffers()):
            if id(t) not in in_blocks:
                t.data = t.data.to(device)
        for block in self.blocks:
            # Device and dtype moves of any parent skip the block: its tensors are the host copies.
            block.module._apply = lambda fn, recurse=True, module=block.module: module
        self.hooks: list[RemovableHandle] = []
        for i, block in enumerate(self.blocks):
            following = self.blocks[i + 1] if i + 1 < len(self.blocks) else None
            self.hooks.append(block.module.register_forward_pre_hook(self._pre_hook(block, following)))
            self.hooks.append(block.module.register_forward_hook(lambda *_, block=block: block.unload()))

    def _pre_hook(self, block: _Block, following: _Block | None):
        def hook(module: nn.Module, args: tuple) -> None:
            block.load(self.device, self.stream)
            if following is not None and self.stream is not None:
                following.fetch(self.device, self.stream)
        return hook

    def remove(self) -> None:
        """Remove the hooks and put the blocks back on the device they had before offloading (the rest of the
        DiT stays where it is: the execution device, or wherever a parent's ``.to()`` has moved it since)."""
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        for block in self.blocks:
            block.unload()
            del block.module._apply
            for t in block.tensors:
                t.data = t.data.to(self.original[id(t)])
        self.dit.block_offload = None


def enable_block_offload(dit: PackedDiT, device: torch.device | str, prefetch: bool = True) -> BlockOffload:
    """Keep ``dit``'s blocks in CPU memory and run each on ``device``; idempotent per model.

    Args:
        dit: the model (on any device; its blocks move to CPU, the rest to ``device``).
        device: the execution device, e.g. ``"cuda"``.
        prefetch: copy the next block on a side CUDA stream while the current one runs (CUDA only).

    Returns:
        The handle (also ``dit.block_offload``); ``handle.remove()`` undoes the offload.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    existing: BlockOffload | None = getattr(dit, "block_offload", None)
    if existing is not None:
        if existing.device != device:
            raise ValueError(f"the DiT is already offloaded to {existing.device}; remove() that first to use {device}.")
        return existing
    dit.block_offload = BlockOffload(dit, device, prefetch)
    return dit.block_offload
