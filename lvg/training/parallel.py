"""Scale-out of the section loop: FSDP2 sharding of a stage module and the helpers the loop needs under it.

Data parallel (``strategy: ddp``) keeps a full replica per GPU; the section loop runs every backward
under ``no_sync`` and averages a video's gradients with one all-reduce (see :class:`StageModule`).

:class:`FSDPStrategy` (``strategy: {class_path: lvg.training.parallel.FSDPStrategy}``) shards the DiT with
FSDP2 (``fully_shard``, through Lightning's ModelParallelStrategy, data parallel over all processes):

* wrap policy: every block of ``PackedDiT.block_types`` (dual- and single-stream) is its own FSDP unit,
  the rest of the DiT (embedders, token refiner, ``norm_out``, ``proj_out``) is the root unit;
* activation-checkpointing policy: the same blocks, recomputed in backward (the DiT's own switch);
* mixed precision: parameters all-gathered and computed in bf16, gradients reduced in fp32 (sharded
  fp32 master weights stay with the optimizer);
* SemanticPack stays replicated (small; its psi graph spans sections outside any DiT forward), its
  gradients are averaged with the DDP path's all-reduce; encoders live in the datamodule, unwrapped;
* checkpoints are sharded (one file per rank, ``torch.distributed.checkpoint``); ``init_from`` and
  ``--ckpt_path`` read them as they are.

With FSDP every backward is a collective (reduce-scatter), so all ranks must run the same number of
backward passes over the same FSDP units. Videos differ in length, hence :func:`aligned_sections`:
each step all ranks run the largest section count, ranks with fewer sections run extra sections at
loss weight 0 (same graph, zero gradient); each rank's real sections keep weight ``1 / own_sections``
and FSDP's reduce-scatter averages over ranks -- exactly DDP's average. Randomness that would shape
the graph (section counts, which modules run) must be equal on all ranks; in the section loop the only
such quantity is the section count, aligned here; sigmas and noise only change values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from lvg.config import DTYPES

if TYPE_CHECKING:
    from lvg.training.base import StageModule

# SingleStreamBlock returns views of its joint sequence (video, conditioning); FSDP2 warns that an in-place
# op on such a view would skip its pre-backward hook. PackedDiT only consumes block outputs out of place.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPSingleStreamBlock\) returned a view tensor")


class FSDPStrategy(ModelParallelStrategy):
    """FSDP2 over all processes with lvg's wrap / activation-checkpointing / mixed-precision policies."""

    def __init__(
        self,
        param_dtype: Literal["bfloat16", "float16", "float32"] | None = "bfloat16",
        reduce_dtype: Literal["bfloat16", "float16", "float32"] | None = "float32",
        activation_checkpointing: bool = True,
        reshard_after_forward: bool = True,
        sharded_checkpoint: bool = True,
        **kwargs,
    ):
        """
        Args:
            param_dtype: dtype parameters are all-gathered and computed in (None: their own, fp32).
            reduce_dtype: dtype gradients are reduce-scattered in (None: ``param_dtype``).
            activation_checkpointing: recompute each DiT block in backward (one more forward, far less memory).
            reshard_after_forward: free gathered block weights after forward and gather again in backward
                (ZeRO-3); False keeps them until backward (ZeRO-2, more memory, less communication).
            sharded_checkpoint: each rank writes its shard (a checkpoint directory); False gathers a
                single file on rank 0 (slow and memory-hungry for 13B).
            kwargs: :class:`~lightning.pytorch.strategies.ModelParallelStrategy` settings
                (``process_group_backend``, ``timeout``).
        """
        super().__init__(tensor_parallel_size=1, save_distributed_checkpoint=sharded_checkpoint, **kwargs)
        for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value is not None and value not in DTYPES:
                raise ValueError(f"FSDPStrategy: {name} must be one of {sorted(DTYPES)} or null, got {value!r}.")
        self.mp_policy = MixedPrecisionPolicy(
            param_dtype=DTYPES[param_dtype] if param_dtype else None,
            reduce_dtype=DTYPES[reduce_dtype] if reduce_dtype else None,
        )
        self.activation_checkpointing, self.reshard_after_forward = activation_checkpointing, reshard_after_forward

    def setup_environment(self) -> None:
        # Pure data parallel: one mesh dimension over every process of every node.
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def shard(self, module: StageModule) -> None:
        """Apply the policies to ``module.dit`` (called from ``StageModule.configure_model``)."""
        mesh = self.device_mesh["data_parallel"]
        shard_dit(module.dit, mesh, self.mp_policy, self.reshard_after_forward)
        if self.activation_checkpointing:
            module.dit.gradient_checkpointing = True


def shard_dit(
    dit: nn.Module, mesh: DeviceMesh, mp_policy: MixedPrecisionPolicy, reshard_after_forward: bool = True
) -> None:
    """``fully_shard`` each block of ``type(dit).block_types`` (the wrap policy), then the DiT itself (the root
    unit: embedders, token refiner, output layer)."""
    for block in [m for m in dit.modules() if isinstance(m, type(dit).block_types)]:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
    fully_shard(dit, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)


def is_sharded(param: Tensor) -> bool:
    """A parameter FSDP2 owns (a DTensor); its gradient is reduced by FSDP, not by the loop's all-reduce."""
    return isinstance(param, DTensor)


def aligned_sections(own: int, device: torch.device) -> int:
    """The largest section count over all processes (``own`` when not distributed): the number of
    section passes every rank runs under FSDP, so their backward collectives line up."""
    if not torch.distributed.is_initialized():
        return own
    count = torch.tensor(own, device=device)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
    return int(count)


def check_fit_strategy(strategy: Strategy, world_size: int, sections_per_step: int | None) -> None:
    """Refuse strategies the section loop cannot run under (before any step)."""
    if world_size > 1 and not isinstance(strategy, (DDPStrategy, FSDPStrategy)):
        raise ValueError(
            f"{type(strategy).__name__} is not supported by the section loop (it averages "
            "gradients itself, once per video); use strategy: ddp or lvg.training.parallel.FSDPStrategy."
        )
    if sections_per_step is not None and isinstance(strategy, FSDPStrategy):
        raise ValueError(
            "sections_per_step cannot run under FSDPStrategy: every FSDP forward and backward is a collective, "
            "so all processes must run the same section passes; leave it null (all sections) or use DDP."
        )


def check_offload_strategy(strategy: Strategy) -> None:
    """Block offload (``sampling.offload``) streams whole blocks from host memory: not with sharded blocks."""
    if isinstance(strategy, FSDPStrategy):
        raise ValueError("sampling.offload streams whole blocks from host memory and cannot run under "
                         "FSDPStrategy (which shards them); use one process per GPU (strategy: auto or ddp).")


def shard_stage(module: StageModule, strategy: Strategy | None) -> None:
    """Shard the stage's DiT (FSDP2) under :class:`FSDPStrategy`, once; nothing under any other strategy."""
    if isinstance(strategy, FSDPStrategy) and not is_sharded(next(module.dit.parameters())):
        strategy.shard(module)


def section_passes(strategy: Strategy, sections: int, device: torch.device) -> int:
    """Section passes of a step: the video's own count, or under FSDP (where every forward and backward is a
    collective) the largest count over all processes (:func:`aligned_sections`); the extra passes are not scored."""
    return aligned_sections(sections, device) if isinstance(strategy, FSDPStrategy) else sections


def average_gradients(parameters: Iterable[nn.Parameter], world_size: int) -> None:
    """One all-reduce of a video's accumulated gradients (data parallel), once per optimizer step.

    DDP's own gradient hooks expect one backward per forward; the section loop runs several, with
    parameters that only some sections touch (psi's projections, Memorize), so every backward
    runs under ``no_sync`` and the sum is averaged here. Under FSDP this covers the replicated
    parameters (SemanticPack); FSDP averages the sharded ones itself.
    """
    if world_size < 2 or not torch.distributed.is_initialized():
        return
    params = [p for p in parameters if not is_sharded(p)]
    if not params:
        return
    for p in params:  # a parameter unused on this rank still takes part, with a zero gradient
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= world_size
    for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float | None) -> Tensor:
    """Clip the total 2-norm of the gradients of sharded (FSDP) and replicated parameters together.

    The norm of sharded gradients is reduced over their mesh (DTensor), so every rank sees the norm of
    the whole model -- what ``clip_grad_norm_`` gives in one process. Returns that norm.
    """
    params = [p for p in parameters if p.grad is not None]
    groups = [g for g in ([p for p in params if is_sharded(p)], [p for p in params if not is_sharded(p)]) if g]
    if not groups:
        return torch.zeros(())
    norms = []
    for group in groups:
        norm = torch.nn.utils.get_total_norm([p.grad for p in group])
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    if max_norm is not None:
        for group in groups:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A checkpoint directory written by :class:`FSDPStrategy` (``torch.distributed.checkpoint``)."""
    return Path(path).is_dir() and (Path(path) / ".metadata").is_file()


def sharded_weights(path: str | Path, device: torch.device | str = "meta") -> dict[str, Tensor]:
    """The model tensors (``state_dict``) of a sharded checkpoint, by name, read from its metadata only:
    empty tensors of the stored shapes and dtypes on ``device`` (no data is read)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = "state_dict."
    return {
        name.removeprefix(prefix): torch.empty(meta.size, dtype=meta.properties.dtype, device=device)
        for name, meta in FileSystemReader(str(path)).read_metadata().state_dict_metadata.items()
        if name.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }


def load_sharded_weights(path: str | Path, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Read the named model tensors of a sharded checkpoint into ``tensors`` in place (one process, no optimizer
    state read: for 13B that is the difference between 52 GB and 156 GB of host memory)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        dcp.load({"state_dict": tensors}, checkpoint_id=str(path), no_dist=True)
    return tensors


def read_checkpoint(path: str | Path, weights: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """A stage checkpoint in CPU memory: ``state_dict`` (every model tensor, or those whose name passes
    ``weights``) and the rest (hyper-parameters, loop state). Reads a ``.ckpt`` file (memory-mapped) or a
    sharded directory (FSDP), of which only the selected model tensors are read, never the optimizer state."""
    path = Path(path)
    keep = weights or (lambda name: True)
    if is_sharded_checkpoint(path):
        tensors = {n: torch.empty_like(t, device="cpu") for n, t in sharded_weights(path).items() if keep(n)}
        extra = path / "meta.pt"  # what Lightning writes beside the shards: everything but weights and optimizer
        return {**(torch.load(extra, map_location="cpu", weights_only=True) if extra.is_file() else {}),
                "state_dict": load_sharded_weights(path, tensors)}
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist (a stage .ckpt file or a sharded checkpoint directory).")
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt.get("state_dict", {}).items() if keep(k)}
    return ckpt
