"""``lvg plan``: memory per GPU of a config (weights, gradients, optimizer state, activations).

The module tree is the real one: the YAML's ``model:`` section is instantiated (``pretrained`` and
``init_from`` disabled) under :class:`~torch._subclasses.fake_tensor.FakeTensorMode`, so a 13B
model costs no memory. Parameter counts and trainable flags come from that tree.

Activations are measured, not guessed: one training-section pass of the DiT runs on fake tensors at
the config's real token counts (noisy window, packed history from :func:`lvg.models.packing.pack_history`,
image, memory and text tokens) under :func:`torch.autograd.graph.saved_tensors_hooks`, which sums
the bytes autograd keeps for backward (deduplicated by storage, parameters excluded), per block.
The pass runs twice: without and with gradient checkpointing (where a block keeps only its inputs);
backward then recomputes one block at a time, so the checkpointed peak adds the largest block's saves.

The pass runs the embedders, blocks and output layer directly (for batch 1 without padding, as
:meth:`PackedDiT.forward` does): the forward's input checks read tensor values (``bool(mask.all())``),
which fake tensors do not have. The token refiner and SemanticPack run on the (small) conditioning
stream and are not measured; the plan says so.

Memory rules (bytes per parameter; N = ``--devices`` under FSDP):

* frozen weights: checkpoint dtype (bf16 under ``bf16-mixed``, fp32 under ``32``);
* trained weights: fp32 master copies (:meth:`StageModule.setup`);
* gradients: fp32, trained parameters only; AdamW: two fp32 states per trained parameter;
* FSDP: weights, gradients and optimizer state / N, plus the largest block all-gathered in bf16;
* generate: bf16 weights, no gradients or optimizer; ``--offload`` keeps the non-block modules and
  two blocks on the GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lvg.config import DIT_PRESETS
from lvg.models.dit import PackedDiT
from lvg.models.packing import pack_history

GIB = 1024**3
TEXT_TOKENS = 512
"""HunyuanVideo's LLaMA text length."""
IMAGE_TOKENS = 729
"""SigLIP (flux_redux) image tokens, 27 x 27."""
DTYPE_BYTES = {"bf16-mixed": 2, "32": 4}


class PlanError(ValueError):
    """A user mistake in ``lvg plan``'s arguments or config."""


@dataclass
class Activations:
    """Bytes autograd saves for backward in one section pass (batch 1)."""

    blocks: list[int]
    """Saved bytes of each DiT block, in order."""
    block_inputs: list[int]
    """Bytes of each block's tensor inputs (what a checkpointed block keeps)."""
    other: int
    """Saved bytes outside the blocks (embedders, output layer)."""
    tokens: dict[str, int]
    """Token counts of the pass: video (history + noisy) and conditioning."""
    method: str
    """``measured (FakeTensor)`` or the analytic fallback used."""

    checkpointed: int
    """Peak saved bytes with gradient checkpointing: a checkpointed pass plus one block recomputed in backward."""

    @property
    def full(self) -> int:
        return self.other + sum(self.blocks)


@dataclass
class Plan:
    """Per-GPU memory of a config under a strategy, in bytes."""

    mode: str
    strategy: str
    devices: int
    precision: str
    params_total: int
    params_trainable: int
    weights: int
    gradients: int
    optimizer: int
    gathered_block: int
    activations_full: int
    activations_checkpointed: int
    gradient_checkpointing: bool
    activation_method: str
    tokens: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def activations(self) -> int:
        return self.activations_checkpointed if self.gradient_checkpointing else self.activations_full

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.gathered_block + self.activations

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "activations": self.activations, "total": self.total}


# --- building the module -------------------------------------------------------------------------


def block_bytes(dit: PackedDiT, bytes_per_param: int) -> int:
    """Bytes of the largest block of ``type(dit).block_types`` at ``bytes_per_param``."""
    sizes = [sum(p.numel() for p in m.parameters()) for m in dit.modules() if isinstance(m, type(dit).block_types)]
    return max(sizes, default=0) * bytes_per_param


# --- activations ----------------------------------------------------------------------------------


class _SavedBytes:
    """``saved_tensors_hooks`` that sum saved bytes per owner (the running block or ``other``)."""

    def __init__(self, exclude: set[int]):
        self.seen, self.exclude = set(exclude), exclude
        self.alive: list[torch.UntypedStorage] = []
        self.owner: int | None = None
        self.blocks: dict[int, int] = {}
        self.other = 0

    def add(self, t: Tensor) -> int:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self.seen:
            return 0
        # Hold the storage (free on fake tensors): a freed one's address could be reused by a later
        # tensor, which would then be wrongly skipped as already counted.
        self.seen.add(key)
        self.alive.append(storage)
        return storage.nbytes()

    def pack(self, t: Tensor) -> Tensor:
        size = self.add(t)
        if self.owner is None:
            self.other += size
        else:
            self.blocks[self.owner] = self.blocks.get(self.owner, 0) + size
        return t


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _section_forward(
    dit: PackedDiT, window: int, latent_hw: tuple[int, int], cond_len: int, dtype: torch.dtype,
    history_sizes: tuple[int, int, int] | None, cond_grad: bool,
) -> int:
    """One training-section pass of ``dit`` at batch 1 (its embedders, blocks and output layer, as
    :meth:`PackedDiT.forward` runs them without padding); returns the video token count."""
    cfg = dit.config
    h, w = latent_hw
    start = torch.zeros(1, cfg.in_channels, 1, h, w, dtype=dtype)
    packed = pack_history(start, start, window, 0, "relative",
                          **({"history_sizes": history_sizes} if history_sizes else {}))
    history = {k: v.to(dtype) if k.startswith("latents") else v for k, v in packed.as_kwargs().items()}
    if dit.clean_x_embedder is None:
        history = {k: v for k, v in history.items() if k == "indices_latents"}
    x, rope, (tp, hp, wp) = dit.video_tokens(torch.randn(1, cfg.in_channels, window, h, w, dtype=dtype), **history)
    rope = (rope[0].to(dtype), rope[1].to(dtype))
    # The conditioning stream [image, memory, text] and temb, as the token refiner / projections hand them over;
    # they need gradients only when a module producing them trains (else frozen blocks save far less).
    c = torch.randn(1, cond_len, cfg.inner_dim, dtype=dtype, requires_grad=cond_grad)
    temb_grad = any(p.requires_grad for p in dit.time_text_embed.parameters())
    temb = torch.randn(1, cfg.inner_dim, dtype=dtype, requires_grad=temb_grad)
    x, c = dit.run_blocks(x, c, temb, None, rope)
    noisy = tp * hp * wp
    out = dit.proj_out(dit.norm_out(x[:, -noisy:], temb))
    out.float().square().mean()  # the loss's own saves (fp32 copy of the prediction)
    return int(x.shape[1])


def measure_activations(
    dit: PackedDiT, window: int, latent_hw: tuple[int, int], memory_tokens: int = 0,
    text_tokens: int = TEXT_TOKENS, image_tokens: int = IMAGE_TOKENS, dtype: torch.dtype = torch.bfloat16,
    history_sizes: tuple[int, int, int] | None = None, memory_requires_grad: bool = False,
) -> Activations:
    """Saved-for-backward bytes of one training-section pass of ``dit`` (built under FakeTensorMode).

    Args:
        dit: the DiT, its parameters fake tensors (cast to ``dtype`` here, as FSDP / autocast compute in it).
        window: latent frames of the noisy section.
        latent_hw: latent height and width.
        memory_tokens: SemanticPack tokens in the conditioning stream (0: none).
        text_tokens / image_tokens: conditioning lengths (image only with ``has_image_proj``).
        dtype: compute dtype.
        history_sizes: 4x/2x/1x history frames (None: the packing default, FramePack-F1's).
        memory_requires_grad: the memory tokens carry gradients (SemanticPack trains).
    """
    cfg = dit.config
    h, w = latent_hw
    if h % cfg.patch_size or w % cfg.patch_size:
        raise PlanError(f"latent size {latent_hw} must be divisible by the patch size {cfg.patch_size}.")
    hp, wp = h // cfg.patch_size, w // cfg.patch_size
    for p in dit.parameters():  # ``.to()`` cannot swap fake parameters in place; set their data instead
        p.data = p.data.to(dtype)
    params = {p.untyped_storage()._cdata for p in dit.parameters()}
    blocks = [m for m in dit.modules() if isinstance(m, type(dit).block_types)]
    index = {id(b): i for i, b in enumerate(blocks)}
    inputs: dict[int, int] = {}
    cond_len = text_tokens + memory_tokens + (image_tokens if dit.image_projection is not None else 0)
    cond_modules = [dit.context_embedder, *([dit.image_projection] if dit.image_projection is not None else [])]
    cond_grad = memory_requires_grad or any(p.requires_grad for m in cond_modules for p in m.parameters())

    def section_pass(checkpointing: bool) -> tuple[_SavedBytes, int]:
        hooks = _SavedBytes(params)

        def pre(module: nn.Module, args: tuple) -> None:
            hooks.owner = index[id(module)]
            inputs[hooks.owner] = sum(t.untyped_storage().nbytes() for t in _tensors(args))

        def post(module: nn.Module, args: tuple, output: Any) -> None:
            hooks.owner = None

        handles = [h_ for b in blocks for h_ in (b.register_forward_pre_hook(pre), b.register_forward_hook(post))]
        enabled, dit.gradient_checkpointing = dit.gradient_checkpointing, checkpointing
        try:
            with torch.autograd.graph.saved_tensors_hooks(hooks.pack, lambda t: t), torch.enable_grad():
                video = _section_forward(dit, window, (h, w), cond_len, dtype, history_sizes, cond_grad)
        finally:
            dit.gradient_checkpointing = enabled
            for handle in handles:
                handle.remove()
        return hooks, video

    full, video = section_pass(checkpointing=False)
    checkpointed, _ = section_pass(checkpointing=True)
    saves = [full.blocks.get(i, 0) for i in range(len(blocks))]
    # Backward recomputes one block at a time on top of what the checkpointed pass keeps. The hooks see
    # checkpoint() pack each block's inputs (outside the block's own hooks, so under ``other``); when no
    # gradient flows through the blocks (all frozen, inputs without grad) nothing references those frames
    # and they are freed at once: checkpointing then keeps what the plain pass keeps.
    if any(saves):
        kept = checkpointed.other + sum(min(checkpointed.blocks.get(i, 0), s) for i, s in enumerate(saves))
        kept += max(saves)
    else:
        kept = full.other
    return Activations(
        blocks=saves,
        block_inputs=[inputs.get(i, 0) for i in range(len(blocks))],
        other=full.other,
        checkpointed=kept,
        tokens={"video": video, "noisy": window * hp * wp // cfg.patch_size_t, "conditioning": cond_len},
        method="measured (FakeTensor saved_tensors_hooks; token refiner and SemanticPack not included)",
    )


def analytic_activations(dit: PackedDiT, video_tokens: int, cond_tokens: int, dtype_bytes: int = 2) -> Activations:
    """Fallback estimate when the fake pass fails: per block ``(10 + 4.5 * mlp_ratio) * D`` values per token
    (inputs of every Linear, norm and attention, the MLP hidden state; 28 D at ratio 4, what the fake pass
    measures for FramePack-F1's dual-stream block, its single-stream block saves 25 D)."""
    cfg = dit.config
    blocks = [m for m in dit.modules() if isinstance(m, type(dit).block_types)]
    per_token = int((10 + 4.5 * cfg.mlp_ratio) * cfg.inner_dim) * dtype_bytes
    n = video_tokens + cond_tokens
    return Activations(
        blocks=[per_token * n] * len(blocks), block_inputs=[n * cfg.inner_dim * dtype_bytes] * len(blocks),
        other=video_tokens * cfg.inner_dim * dtype_bytes * 2,
        checkpointed=(len(blocks) + 2) * n * cfg.inner_dim * dtype_bytes + per_token * n,
        tokens={"video": video_tokens, "conditioning": cond_tokens}, method="analytic per-block formula",
    )


# --- the plan -------------------------------------------------------------------------------------


def make_plan(
    module: nn.Module, activations: Activations, *, strategy: str = "single", devices: int = 1,
    precision: str = "bf16-mixed", mode: str = "train", offload: bool = False, gradient_checkpointing: bool = False,
) -> Plan:
    """Per-GPU memory of ``module`` (its ``requires_grad`` flags say what trains); see the module docstring."""
    if precision not in DTYPE_BYTES:
        raise PlanError(f"--precision must be one of {sorted(DTYPE_BYTES)}, got {precision!r}.")
    if strategy not in ("single", "ddp", "fsdp"):
        raise PlanError(f"--strategy must be single, ddp or fsdp, got {strategy!r}.")
    if devices < 1 or (strategy == "single" and devices != 1):
        raise PlanError(f"--devices must be >= 1 (and 1 with --strategy single), got {devices}.")
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    dit: PackedDiT = module.dit
    notes: list[str] = []
    if mode == "generate":
        weights = total * 2
        if offload:
            in_blocks = sum(p.numel() for m in dit.modules() if isinstance(m, type(dit).block_types)
                            for p in m.parameters())
            weights = (total - in_blocks) * 2 + 2 * block_bytes(dit, 2)
            notes.append("offload: non-block modules + 2 blocks resident (bf16)")
        # Inference keeps no saved tensors: one block's working set, measured as its training saves.
        act = max(activations.blocks, default=0) + max(activations.block_inputs, default=0)
        return Plan(mode, "single", 1, "bf16", total, 0, weights, 0, 0, 0, act, act, False, activations.method,
                    activations.tokens, notes + ["activations: the largest block's working set (no autograd)"])
    if mode != "train":
        raise PlanError(f"--mode must be train or generate, got {mode!r}.")
    frozen_bytes = DTYPE_BYTES[precision]
    weights = (total - trainable) * frozen_bytes + trainable * 4
    gradients, optimizer = trainable * 4, trainable * 8
    gathered = 0
    if strategy == "fsdp":
        weights, gradients, optimizer = weights // devices, gradients // devices, optimizer // devices
        gathered = block_bytes(dit, 2)
        notes.append(f"fsdp: weights/grads/AdamW sharded over {devices}; the largest block all-gathered in bf16")
    return Plan(mode, strategy, devices, precision, total, trainable, weights, gradients, optimizer, gathered,
                activations.full, activations.checkpointed, gradient_checkpointing, activations.method,
                activations.tokens, notes)


def format_plan(plan: Plan, title: str) -> str:
    """The plan as an aligned text table (GiB)."""
    def gib(n: int) -> str:
        return f"{n / GIB:10.2f} GiB" if n >= GIB // 10 or n == 0 else f"{n / 2**20:10.2f} MiB"

    ckpt = "on" if plan.gradient_checkpointing else "off"
    rows = [
        ("parameters (total)", f"{plan.params_total:>14,}"),
        ("parameters (trainable)", f"{plan.params_trainable:>14,}"),
        ("weights", gib(plan.weights)),
        ("gradients (fp32)", gib(plan.gradients)),
        ("AdamW state (2 x fp32)", gib(plan.optimizer)),
        ("all-gathered block (bf16)", gib(plan.gathered_block)),
        ("activations / section, no ckpt", gib(plan.activations_full)),
        ("activations / section, ckpt", gib(plan.activations_checkpointed)),
        (f"total per GPU (ckpt {ckpt})", gib(plan.total)),
    ]
    head = (f"{title}: mode {plan.mode}, strategy {plan.strategy} x {plan.devices}, precision {plan.precision}; "
            f"tokens {plan.tokens}")
    width = max(len(r[0]) for r in rows)
    lines = [head] + [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += [f"  activations: {plan.activation_method}"] + [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _default_latent(data: dict[str, Any] | None, preset: str) -> tuple[int, int]:
    frame = (data or {}).get("init_args", {}).get("frame_size")
    in_channels = DIT_PRESETS[preset].in_channels if preset in DIT_PRESETS else 16
    factor = 8 if in_channels == 16 else 2  # HunyuanVideo VAE vs the toy PixelCodec (space-to-depth by 2)
    if frame:
        return frame[0] // factor, frame[1] // factor
    return (60, 104) if preset == "framepack-f1" else (16, 16)


def plan_stage(
    module: nn.Module, trainer: dict[str, Any], data: dict[str, Any] | None, *, strategy: str | None = None,
    devices: int | None = None, precision: str | None = None, mode: str = "train", offload: bool = False,
    latent: tuple[int, int] | None = None,
) -> Plan:
    """The memory plan of a stage module with its config's ``trainer:`` and ``data:`` sections; options left
    None come from the config. Call it inside the ``FakeTensorMode`` the module was built in
    (``lvg.cli.configs.build_model``), so a 13B model costs no memory."""
    init = module.hparams
    strategy_spec = trainer.get("strategy")
    strategy_cfg = (str(strategy_spec.get("class_path", "")) if isinstance(strategy_spec, dict)
                    else str(strategy_spec or ""))
    devices = devices or (trainer.get("devices") if isinstance(trainer.get("devices"), int) else 1)
    strategy = strategy or ("fsdp" if "FSDP" in strategy_cfg else ("ddp" if devices > 1 else "single"))
    precision = precision or ("bf16-mixed" if "bf16" in str(trainer.get("precision") or "bf16-mixed") else "32")
    fsdp_ckpt = isinstance(strategy_spec, dict) and (strategy_spec.get("init_args") or {}).get(
        "activation_checkpointing", False)
    preset = init.get("dit", "toy")
    latent = tuple(latent) if latent else _default_latent(data, preset)
    sp = getattr(module, "semantic_pack", None)
    memory = sp.cfg.memory_tokens if sp is not None else 0
    dtype = torch.bfloat16 if precision == "bf16-mixed" or mode == "generate" else torch.float32
    mp = module.memory_pack_config
    memory_grad = sp is not None and any(p.requires_grad for p in sp.parameters())
    if mode == "generate":  # a block's working set, measured as what training would save of it
        module.requires_grad_(True)
        memory_grad = True
    try:
        activations = measure_activations(module.dit, mp.window, latent, memory, dtype=dtype,
                                          history_sizes=mp.history_sizes, memory_requires_grad=memory_grad)
    except (RuntimeError, NotImplementedError) as err:  # an op FakeTensor cannot run: say so and estimate
        cfg = module.dit.config
        video = (mp.window + sum(mp.history_sizes)) * latent[0] * latent[1] // cfg.patch_size**2
        activations = analytic_activations(module.dit, video, TEXT_TOKENS + IMAGE_TOKENS + memory,
                                           torch.finfo(dtype).bits // 8)
        activations.method += f" (FakeTensor failed: {type(err).__name__}: {err})"
    return make_plan(module, activations, strategy=strategy, devices=devices, precision=precision, mode=mode,
                     offload=offload, gradient_checkpointing=bool(init.get("gradient_checkpointing") or fsdp_ckpt))
