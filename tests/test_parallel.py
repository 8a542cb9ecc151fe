"""FSDP2 scale-out of the section loop: 2 CPU processes (gloo) == one process averaging the same videos."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from fsdp_worker import MAX_GRAD_NORM

from lvg.training import DirectForcingModule, TeacherForcingModule
from lvg.training.parallel import FSDPStrategy, clip_grad_norm
from toy_setup import module, replay_ranks_in_one_process

WORKER = Path(__file__).parent / "fsdp_worker.py"


def run_worker(root, out, stage, *extra):
    # Own session: a hang (mismatched collectives) kills the worker *and* the rank Lightning launched.
    worker = subprocess.Popen([sys.executable, str(WORKER), str(root), str(out), stage, "2", *map(str, extra)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent,
                              start_new_session=True)
    try:
        _, stderr = worker.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate()
        pytest.fail("2-process FSDP run hung (ranks ran different numbers of backward passes?)")
    assert worker.returncode == 0, stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.distributed
@pytest.mark.parametrize("stage, cls", [("teacher", TeacherForcingModule), ("direct", DirectForcingModule)])
def test_fsdp_two_processes_equal_single_process_average(stage, cls, toy_root, tmp_path):
    ckpt = tmp_path / "ckpt"
    ranks = run_worker(toy_root, tmp_path, stage, *([ckpt] if stage == "teacher" else []))
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    assert ranks[0]["videos"] != ranks[1]["videos"]  # data sharded by rank
    # videos of different lengths: without aligned section passes the ranks' reduce-scatters would hang
    assert ranks[0]["sections"] != ranks[1]["sections"]
    # per step, each rank's video loss averaged over its own sections, then over ranks
    reference, norms = replay_ranks_in_one_process(cls, toy_root, ranks, max_grad_norm=MAX_GRAD_NORM)
    assert all(norm > MAX_GRAD_NORM for norm in norms)  # clipping is active, so the sharded norm is checked too
    # wrap policy: every DiT parameter is sharded (blocks + root unit), SemanticPack stays replicated
    assert ranks[0]["sharded"] == sum(1 for _ in reference.dit.parameters())
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    if stage == "teacher":  # the sharded checkpoint (a directory) is a valid init_from for stage 2
        assert (ckpt / "last.ckpt").is_dir()
        stage2 = module(DirectForcingModule, init_from=str(ckpt / "last.ckpt"))
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(stage2.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_padded_section_passes_leave_gradients_unchanged(toy_batch):
    """Extra passes at loss weight 0 (FSDP's aligned section count) add nothing to any gradient."""
    grads = []
    for extra in (0, 2):
        L.seed_everything(0)
        model = module(TeacherForcingModule)
        sections = model.num_sections(toy_batch)
        losses, _ = model.video_gradients(toy_batch, model.step_generator(0, 0), lambda loss, **kw: loss.backward(**kw),
                                          contextlib.nullcontext, passes=sections + extra)
        assert len(losses) == sections
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=0, msg=name)


def test_clip_grad_norm_matches_torch_on_plain_parameters():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)) for _ in range(3)]
    for p in params[:2]:
        p.grad = torch.randn_like(p)
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, c in zip(params, copies):
        c.grad = None if p.grad is None else p.grad.clone()
    norm = clip_grad_norm(params, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(copies, 0.5)
    torch.testing.assert_close(norm, expected)
    for p, c in zip(params[:2], copies[:2]):
        torch.testing.assert_close(p.grad, c.grad)
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params[:2]])) == pytest.approx(0.5, rel=1e-4)


def test_fsdp_strategy_options_are_checked():
    with pytest.raises(ValueError, match="param_dtype must be one of"):
        FSDPStrategy(param_dtype="bf16")
    strategy = FSDPStrategy()
    assert strategy.mp_policy.param_dtype == torch.bfloat16 and strategy.mp_policy.reduce_dtype == torch.float32
    assert strategy._save_distributed_checkpoint  # sharded checkpoints by default
