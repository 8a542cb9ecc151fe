"""MemoryPack: FramePack short-term context + SemanticPack long-term memory + RoPE consistency.

:class:`MemoryPackState` is the per-video memory that a training step and the sampler share::

    state = MemoryPackState(config, start_latent, text=..., text_mask=..., pooled=..., image=...,
                            semantic_pack=model.semantic_pack)
    for n in range(num_sections):
        v = dit(hidden_states=x_sigma, timestep=..., guidance=..., **state.context())
        ...                                    # loss, or sampler steps
        state.update(section_latents)          # ground truth, x0_hat, or the sampled section

Work per section is O(1) in the video length: the state keeps only the rolling short-term buffer
(the last ``sum(history_sizes)`` latents, as FramePack-F1's packing reads no further back) and psi.
The full video belongs to whoever generates or loads it. A prompt change (prompt schedules)
swaps the text conditioning with :meth:`MemoryPackState.set_prompt`; psi is not reset -- it keeps
what it memorised, which is the point of a long-term memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lvg.models.packing import F1_HISTORY_SIZES, RopeTimeMode, pack_history
from lvg.models.semantic_pack import SemanticPack


@dataclass(frozen=True)
class MemoryPackConfig:
    """Context packing and memory recurrence settings."""

    window: int = 9
    """Latent frames generated per section (FramePack's ``latent_window_size``; 9 -> 33 pixel frames)."""
    history_sizes: tuple[int, int, int] = F1_HISTORY_SIZES
    """Latent frames in the 4x, 2x and 1x history slots (FramePack-F1: 16, 2, 1)."""
    rope_time_mode: RopeTimeMode = "relative"
    """``relative``: FramePack-F1's fixed layout (checkpoint parity); ``absolute``: true positions in the video."""
    psi_bptt: int = 1
    """Truncated BPTT for psi: gradients flow through this many consecutive psi updates
    (1 = detach between sections)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "history_sizes", tuple(self.history_sizes))
        if self.window < 1:
            raise ValueError(f"MemoryPackConfig.window must be >= 1, got {self.window}.")
        if len(self.history_sizes) != 3 or min(self.history_sizes) < 1:
            raise ValueError(f"MemoryPackConfig.history_sizes must be three positive ints, got {self.history_sizes}.")
        if self.rope_time_mode not in ("relative", "absolute"):
            raise ValueError(
                f"MemoryPackConfig.rope_time_mode must be 'relative' or 'absolute', got {self.rope_time_mode!r}."
            )
        if self.psi_bptt < 1:
            raise ValueError(f"MemoryPackConfig.psi_bptt must be >= 1, got {self.psi_bptt}.")


class MemoryPackState:
    """Memory of a batch of videos advancing in lockstep; see the module docstring."""

    def __init__(
        self,
        config: MemoryPackConfig,
        start: Tensor,
        *,
        text: Tensor,
        text_mask: Tensor,
        pooled: Tensor,
        image: Tensor | None = None,
        semantic_pack: SemanticPack | None = None,
    ):
        """
        Args:
            config: packing and recurrence settings.
            start: start (reference) latent ``(B, C, 1, H, W)``.
            text / text_mask / pooled / image: the backbone's conditioning, ``(B, L_t, D_text)``,
                ``(B, L_t)``, ``(B, D_pool)``, ``(B, L_i, D_img)``.
            semantic_pack: the long-term memory module; None = FramePack context only (F1 baseline).
        """
        if start.ndim != 5 or start.shape[2] != 1:
            raise ValueError(f"MemoryPackState: start must be (B, C, 1, H, W), got {tuple(start.shape)}.")
        self.config = config
        self.semantic_pack = semantic_pack if semantic_pack is not None and semantic_pack.cfg.enabled else None
        self.start = start
        self.section = 0
        # FramePack-F1's buffer is [zeros | start | generated...]; we keep its last sum(history_sizes) frames.
        need = sum(config.history_sizes)
        self.recent = torch.cat([start.new_zeros(*start.shape[:2], need - 1, *start.shape[3:]), start], dim=2)
        self.set_prompt(text, text_mask, pooled, image)
        self.end, self.total_sections = None, None
        self.psi = self.psi_mask = self.reference = None
        self._updates_since_detach = 0
        if self.semantic_pack is not None:
            self.psi, self.psi_mask = self.semantic_pack.initial_psi(text, text_mask, image)
            self.reference = self.semantic_pack.reference_memory(start)

    def set_prompt(self, text: Tensor, text_mask: Tensor, pooled: Tensor, image: Tensor | None = None) -> None:
        """Change the text (and image) conditioning from the next section on; psi is kept."""
        self.text, self.text_mask, self.pooled, self.image = text, text_mask, pooled, image

    def set_end(self, end: Tensor, total_sections: int) -> None:
        """Condition every section on an end latent ``(B, C, 1, H, W)``: the video's last frame.

        It joins the 1x clean latents at the position of the final frame of a ``total_sections``
        video, ``window_start + (total_sections - n) * window - 1`` (in either RoPE mode). Models
        must be trained with it to use it well; FramePack-F1 never saw an end frame.
        """
        if end.shape != self.start.shape:
            raise ValueError(f"MemoryPackState.set_end: end latent must be {tuple(self.start.shape)}, "
                             f"got {tuple(end.shape)}.")
        if total_sections < 1:
            raise ValueError(f"MemoryPackState.set_end: total_sections must be >= 1, got {total_sections}.")
        self.end, self.total_sections = end, total_sections

    def context(self) -> dict[str, Tensor]:
        """Keyword arguments for :meth:`PackedDiT.forward` except ``hidden_states``, ``timestep``, ``guidance``."""
        cfg = self.config
        packed = pack_history(self.recent, self.start, cfg.window, self.section, cfg.rope_time_mode, cfg.history_sizes)
        if self.end is not None:
            final = packed.indices_latents[:, :1] + (self.total_sections - self.section) * cfg.window - 1
            packed.latents_clean = torch.cat([packed.latents_clean, self.end.to(packed.latents_clean.dtype)], dim=2)
            packed.indices_latents_clean = torch.cat([packed.indices_latents_clean, final], dim=1)
        kwargs = dict(
            encoder_hidden_states=self.text,
            encoder_attention_mask=self.text_mask,
            pooled_projections=self.pooled,
            **packed.as_kwargs(),
        )
        if self.image is not None:
            kwargs["image_embeds"] = self.image
        if self.semantic_pack is not None:
            kwargs["memory_tokens"] = self.semantic_pack.tokens(self.psi)
            kwargs["memory_mask"] = self.psi_mask
        return kwargs

    def update(self, section_latents: Tensor) -> None:
        """Append a finished section ``(B, C, T, H, W)`` to the history and advance psi (O(1) work)."""
        expected = (*self.start.shape[:2], *self.start.shape[3:])
        if section_latents.ndim != 5 or (*section_latents.shape[:2], *section_latents.shape[3:]) != expected:
            raise ValueError(
                f"MemoryPackState.update: section latents must be (B, C, T, H, W) = "
                f"({expected[0]}, {expected[1]}, T, {expected[2]}, {expected[3]}), got {tuple(section_latents.shape)}."
            )
        need = sum(self.config.history_sizes)
        section_latents = section_latents.to(self.start.dtype)  # samplers integrate in fp32; the model may not
        self.recent = torch.cat([self.recent, section_latents.detach()], dim=2)[:, :, -need:]
        if self.semantic_pack is not None:
            if self._updates_since_detach >= self.config.psi_bptt:
                self.psi = self.psi.detach()
                self._updates_since_detach = 0
            self.psi, self.psi_mask = self.semantic_pack.update(self.psi, self.psi_mask, section_latents,
                                                                self.reference)
            self._updates_since_detach += 1
        self.section += 1

    def detach(self) -> MemoryPackState:
        """Cut every autograd edge into the state (e.g. between optimizer steps)."""
        if self.psi is not None:
            self.psi = self.psi.detach()
        if self.reference is not None:
            self.reference = self.reference.detach()
        self._updates_since_detach = 0
        return self

    # --- save / restore (generation resume) ------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        cfg = self.config
        sp = self.semantic_pack
        return {
            "window": cfg.window,
            "history_sizes": list(cfg.history_sizes),
            "rope_time_mode": cfg.rope_time_mode,
            "semantic_pack": None if sp is None else {"fusion": sp.cfg.fusion, "dim": sp.cfg.dim, "psi0": sp.cfg.psi0},
            "total_sections": self.total_sections,
        }

    _TENSORS = ("start", "recent", "text", "text_mask", "pooled", "image", "psi", "psi_mask", "reference", "end")

    def state_dict(self) -> dict[str, Any]:
        """Detached tensors + counters; ``torch.save``-able. psi gradients are not part of the state."""
        state = {k: None if getattr(self, k) is None else getattr(self, k).detach() for k in self._TENSORS}
        return {**state, "section": self.section, "config": self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved state; refuses one written for another configuration or model."""
        mine = self._fingerprint()
        if state.get("config") != mine:
            raise ValueError(
                f"MemoryPack state was saved with {state.get('config')}, but this model uses {mine}; "
                "resume with the configuration that wrote it."
            )
        for key in self._TENSORS:
            current, saved = getattr(self, key), state[key]
            if (current is None) != (saved is None) or (
                saved is not None and _comparable(key, saved.shape) != _comparable(key, current.shape)
            ):
                got = None if saved is None else tuple(saved.shape)
                want = None if current is None else tuple(current.shape)
                raise ValueError(f"MemoryPack state: '{key}' has shape {got}, "
                                 f"expected {want} for this model and input.")
            if saved is not None:
                setattr(self, key, saved.to(current.device))
        self.section = int(state["section"])
        self._updates_since_detach = 0


def _comparable(key: str, shape: torch.Size) -> tuple[int, ...]:
    """The part of a state tensor's shape fixed by model and input (psi and text lengths may change)."""
    if key in ("psi", "text"):
        return (shape[0], shape[-1])
    if key in ("psi_mask", "text_mask"):
        return (shape[0],)
    return tuple(shape)
