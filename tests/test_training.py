"""Training stages and the `lvg` CLI on a tiny toy world (CPU)."""

import contextlib
import io
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lvg.cli import main
from lvg.media import read_video
from lvg.models.memory_pack import MemoryPackConfig, MemoryPackState
from lvg.models.semantic_pack import SemanticPackConfig
from lvg.training import DirectForcingModule, StudentForcingModule, TeacherForcingModule
from toy_setup import CONFIGS, DEBUG_FOR_TOY, WINDOW, datamodule, module, replay_ranks_in_one_process, trainer

# --- CLI ------------------------------------------------------------------------------------------

CLI_TINY = [
    "--model.init_args.dit=debug",
    f"--model.init_args.dit_overrides={json.dumps(DEBUG_FOR_TOY)}",
    f"--model.init_args.memory_pack.window={WINDOW}",
    "--model.init_args.semantic_pack.dim=32",
    "--model.init_args.semantic_pack.memory_grid=[2, 2]",
    "--data.init_args.toy.num_videos=3",
    "--data.init_args.toy.min_seconds=2.0",
    "--data.init_args.toy.max_seconds=3.0",
    "--data.init_args.toy.size=32",
    f"--data.init_args.min_latent_frames={1 + WINDOW}",
]


@pytest.mark.parametrize("stage", ["teacher_forcing", "direct_forcing", "student_forcing"])
def test_fast_dev_run_of_each_stage_through_the_cli(stage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' relative runs/ and data/ paths land in tmp
    extra = ["--model.init_args.init_from=null"] if stage != "teacher_forcing" else []
    main(["fit", "--config", str(CONFIGS / f"{stage}.yaml"), "--trainer.fast_dev_run=1", *CLI_TINY, *extra])
    assert (tmp_path / "data/toy_world/shards/index.json").is_file()


def test_main_job_chain_stage1_checkpoint_into_stage2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "teacher_forcing.yaml"), "--trainer.max_steps=2", *CLI_TINY])
    last = tmp_path / "runs/teacher_forcing/checkpoints/last.ckpt"
    assert last.is_file()
    assert (tmp_path / "runs/teacher_forcing/tensorboard/config.yaml").is_file()  # config saved with the run
    assert list((tmp_path / "runs/teacher_forcing/tensorboard").glob("events.out.tfevents.*"))
    main(["fit", "--config", str(CONFIGS / "direct_forcing.yaml"), "--trainer.max_steps=2", *CLI_TINY])
    stage2 = torch.load(tmp_path / "runs/direct_forcing/checkpoints/last.ckpt", weights_only=False)
    stage1 = torch.load(last, weights_only=False)
    changed = {k for k in stage1["state_dict"] if not torch.equal(stage1["state_dict"][k], stage2["state_dict"][k])}
    assert changed and all(k.startswith(("dit.norm_out.", "dit.proj_out.")) for k in changed)

    # generate from the stage-2 checkpoint with the same config (encoders come from the datamodule)
    start = tmp_path / "start.png"
    frames, _ = read_video(tmp_path / "data/toy_world/videos/toy_0000.mp4")
    Image.fromarray(frames[0]).save(start)
    generate = ["generate", "--config", str(CONFIGS / "direct_forcing.yaml"), *CLI_TINY,
                "--ckpt_path", "runs/direct_forcing/checkpoints/last.ckpt",
                "--image", str(start), "--sections", "2", "--model.init_args.sampling.steps=2",
                "--output", "out/video.mp4"]
    main([*generate, "--prompt", "[0s] a red circle [0.5s] a blue square"])
    video, fps = read_video(tmp_path / "out/video.mp4")
    assert video.shape == (1 + 2 * WINDOW, 32, 32, 3) and fps == 8
    assert np.array_equal(video[0], frames[0])  # the exact toy codec keeps the start frame
    # block offload (the DiT's blocks stay in host memory and are streamed) is exact
    main([*generate, "--prompt", "[0s] a red circle [0.5s] a blue square", "--output", "out/offload.mp4",
          "--model.init_args.sampling.offload=true"])
    assert np.array_equal(read_video(tmp_path / "out/offload.mp4")[0], video)
    with pytest.raises(SystemExit, match="already exist; pass overwrite=True"):
        main([*generate, "--prompt", "a red circle"])
    with pytest.raises(SystemExit, match="cannot be read"):
        main([*generate, "--prompt", "a red circle", "--image", str(tmp_path / "missing.png"), "--overwrite=true"])
    with pytest.raises(SystemExit, match="prompt at 0.0s is empty"):
        main([*generate, "--prompt", " ", "--overwrite"])  # a bare flag means true
    # weights of another architecture (here a wider SemanticPack) are refused with the tensors named
    with pytest.raises(SystemExit, match=r"does not fit DirectForcingModule\(debug\): shape mismatches"):
        main([*generate, "--prompt", "a", "--overwrite", "--model.init_args.semantic_pack.dim=64"])
    other = module(DirectForcingModule, semantic_pack=SemanticPackConfig(dim=64, num_heads=4, memory_grid=(2, 2)))
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(SystemExit, match=r"does not fit DirectForcingModule\(debug\): shape mismatches"):
        main([*generate, "--ckpt_path", str(tmp_path / "other.ckpt"), "--prompt", "a", "--overwrite=true"])


def test_loggers_record_the_config_dataclasses_as_plain_values(tmp_path):
    """TensorBoard's hparams.yaml holds the configs field by field (Lightning's YAML path would skip a dataclass,
    and its OmegaConf path, taken whenever omegaconf is installed, fails on frozen ones); checkpoints keep them."""
    import yaml
    from lightning.pytorch.core.saving import save_hparams_to_yaml

    m = module(TeacherForcingModule)
    for use_omegaconf in (False, True):
        save_hparams_to_yaml(tmp_path / "hparams.yaml", m.hparams_initial, use_omegaconf=use_omegaconf)
        saved = yaml.safe_load((tmp_path / "hparams.yaml").read_text())
        assert saved["memory_pack"]["window"] == m.memory_pack_config.window
        assert saved["sampling"]["steps"] == m.sampling_config.steps
    assert isinstance(m.hparams["memory_pack"], MemoryPackConfig)


def test_help_documents_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "fit" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--trainer.max_steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "lvg.training.DirectForcingModule"])
    out = capsys.readouterr().out
    for option in ("--model.init_from", "--model.memory_pack.rope_time_mode", "--model.semantic_pack.fusion",
                   "--model.sigma.distribution", "--model.trainable"):
        assert option in out
    assert "what stage 2 trains" in out and "AdamW learning rate" in out
    assert "FramePack-F1's fixed layout" in out  # dataclass attribute docstrings reach --help


@pytest.mark.parametrize("config", sorted(p.relative_to(CONFIGS) for p in CONFIGS.rglob("*.yaml")), ids=str)
def test_every_yaml_parses(config, capsys):
    files = [CONFIGS / config]
    command, expected = "fit", "class_path: lvg.training."
    if config.parts[0] == "trainer":  # fragments go after a stage config
        files.insert(0, CONFIGS / "teacher_forcing.yaml")
    elif config.parts[0] == "prepare":
        command, expected = "prepare", "class_path: lvg.data."
    elif config == Path("framepack_f1/test.yaml"):  # the benchmark fragment goes after the stage it benchmarks
        command, files = "test", [CONFIGS / "framepack_f1/stage2.yaml", *files]
    with pytest.raises(SystemExit) as exit_:
        main([command, *[a for f in files for a in ("--config", str(f))], "--print_config"])
    assert exit_.value.code in (0, None)
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    "arg, match",
    [
        ("--model.init_args.no_such_option=1", "no_such_option"),
        ("--model.init_args.lr=fast", "lr"),
        ("--model.init_args.memory_pack.rope_time_mode=causal", "rope_time_mode"),
    ],
)
def test_bad_config_is_a_clear_error_before_training(arg, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "teacher_forcing.yaml"), arg])
    assert str(exit_.value.code).startswith("lvg: error: ") and match in exit_.value.code  # one line, exit status 1
    assert not (tmp_path / "runs").exists()


# --- stage behaviour ------------------------------------------------------------------------------


class Recorder(L.Callback):
    """Per-step loss and video ids."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step, batch["id"], float(outputs["loss"])))


def test_direct_forcing_history_is_previous_one_step_estimate_and_one_step_per_video(toy_root, tmp_path, monkeypatch):
    model = module(DirectForcingModule)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictions, histories = [], []
    velocity = model.velocity

    def recording_velocity(x_sigma, sigma, context):
        v = velocity(x_sigma, sigma, context)
        predictions.append((x_sigma.detach(), sigma.detach(), v.detach()))
        return v

    update = MemoryPackState.update

    def recording_update(self, section):
        histories.append(section.clone())
        update(self, section)

    monkeypatch.setattr(model, "velocity", recording_velocity)
    monkeypatch.setattr(MemoryPackState, "update", recording_update)
    dm = datamodule(toy_root)
    trainer(tmp_path, max_epochs=1).fit(model, dm)

    videos = len(dm.train_set)
    assert model.global_step == videos  # exactly one optimizer step per video
    assert len(predictions) == len(histories)  # one forward per section: no extra pass for the history
    for (x_sigma, sigma, v), history in zip(predictions, histories):
        expected = x_sigma - sigma.view(-1, 1, 1, 1, 1) * v  # x0_hat of the section just trained
        torch.testing.assert_close(history, expected, rtol=0, atol=1e-6)
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        assert changed == key.startswith(("dit.norm_out.", "dit.proj_out.")), key


@pytest.mark.parametrize("cls", [TeacherForcingModule, DirectForcingModule])
def test_sections_per_step_scores_that_many_random_sections(cls, toy_data, monkeypatch):
    """Teacher Forcing runs the DiT only on the scored sections (the others are ground-truth history);
    Direct Forcing still predicts every section's history, without gradients for the unscored ones."""
    model = module(cls, sections_per_step=1)
    batch = next(iter(toy_data.train_dataloader()))
    sections = model.num_sections(batch)
    assert sections >= 3
    calls, backwards, updates = [], [], []
    velocity, update = model.velocity, MemoryPackState.update

    def recording_velocity(x_sigma, sigma, context):
        calls.append(torch.is_grad_enabled())
        return velocity(x_sigma, sigma, context)

    def recording_update(self, section):
        updates.append(section.clone())
        update(self, section)

    monkeypatch.setattr(model, "velocity", recording_velocity)
    monkeypatch.setattr(MemoryPackState, "update", recording_update)
    drawn = set()
    for step in range(8):
        calls.clear(), backwards.clear(), updates.clear()
        losses, sigmas = model.video_gradients(batch, model.step_generator(step, 0),
                                               lambda loss, **kw: backwards.append(loss.detach().item()),
                                               contextlib.nullcontext)
        assert len(losses) == 1 and len(sigmas) == 1 and len(backwards) == 1
        assert backwards[0] == pytest.approx(float(next(iter(losses.values()))))  # weight 1 / scored sections
        assert len(updates) == sections  # the memory still advances through the whole video
        assert calls == ([True] if cls is TeacherForcingModule else [n in losses for n in range(sections)])
        drawn |= set(losses)
    assert len(drawn) > 1  # a different section on different steps


def test_sections_per_step_is_refused_below_one():
    with pytest.raises(ValueError, match="sections_per_step must be >= 1"):
        module(sections_per_step=0)


def test_cosine_schedule_warms_up_then_decays_to_min_lr(toy_root, tmp_path):
    lrs = []

    class LR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    model = module(lr_schedule="cosine", warmup_steps=2, min_lr_ratio=0.1, max_sections=1)
    trainer(tmp_path, max_steps=6, callbacks=[LR()]).fit(model, datamodule(toy_root))
    expected = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx([1e-3 * f for f in expected])


@pytest.mark.parametrize("cls", [TeacherForcingModule, DirectForcingModule, StudentForcingModule])
def test_resume_equivalence(cls, toy_root, tmp_path):
    """N steps straight == k steps, stop, resume from last.ckpt, N - k steps (losses and data order)."""

    def run(max_steps, root, ckpt_path=None):
        L.seed_everything(0)
        recorder = Recorder()
        ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)
        trainer(root, max_steps=max_steps, callbacks=[recorder, ckpt]).fit(
            module(cls), datamodule(toy_root), ckpt_path=ckpt_path
        )
        return recorder.steps

    straight = run(5, tmp_path / "a")  # 3 videos per epoch: the stop at step 2 is mid-epoch
    first = run(2, tmp_path / "b")
    resumed = run(5, tmp_path / "b", ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    combined = first + resumed
    assert [s[:2] for s in combined] == [s[:2] for s in straight]
    for (_, _, a), (_, _, b) in zip(combined, straight):
        assert a == pytest.approx(b, abs=1e-6)


def test_nan_loss_stops_with_step_and_video_and_keeps_last_good_checkpoint(toy_root, tmp_path, monkeypatch):
    model = module()
    velocity = model.velocity

    def poisoned(x_sigma, sigma, context):
        v = velocity(x_sigma, sigma, context)
        return v * float("nan") if model.global_step == 2 else v

    monkeypatch.setattr(model, "velocity", poisoned)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    with pytest.raises(FloatingPointError, match=r"at step 2, section 0, videos \['toy_\d{4}'\]"):
        trainer(tmp_path, max_steps=5, callbacks=[ckpt]).fit(model, datamodule(toy_root))
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_init_from_errors(tmp_path, toy_root):
    with pytest.raises(ValueError, match="init_from: .*missing.ckpt does not exist"):
        module(DirectForcingModule, init_from=str(tmp_path / "missing.ckpt"))
    other = module(TeacherForcingModule, semantic_pack=SemanticPackConfig(dim=64, num_heads=4, memory_grid=(2, 2)))
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(ValueError, match=r"does not fit DirectForcingModule\(debug\): shape mismatches"):
        module(DirectForcingModule, init_from=str(path))
    with pytest.raises(ValueError, match="trainable: 'semantic_pack.' matches no parameter"):
        module(TeacherForcingModule, trainable="semantic_pack", semantic_pack=SemanticPackConfig(enabled=False))


def test_manifest_row_without_caption_is_refused_before_any_work(tmp_path):
    from lvg.data.manifest import read_manifest

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "a", "video": "a.mp4", "caption": "x"}) + "\n"
                        + json.dumps({"id": "b", "video": "b.mp4"}) + "\n")
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: missing required field 'caption'"):
        read_manifest(manifest)


def test_sample_video_logger_lands_in_the_tensorboard_event_file(toy_root, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lvg.callbacks import SampleVideoLogger
    from lvg.sampling.pipeline import SamplingConfig

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    callback = SampleVideoLogger(every_n_steps=2, sections=2, sampling=SamplingConfig(steps=2))
    L.Trainer(accelerator="cpu", max_steps=2, logger=logger, callbacks=[callback], enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(module(), datamodule(toy_root))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert {"sample/video_0", "sample/frames_0"} <= set(events.Tags()["images"])
    gif = events.Images("sample/video_0")
    assert [e.step for e in gif] == [2] and gif[0].encoded_image_string.startswith(b"GIF8")
    frames = Image.open(io.BytesIO(gif[0].encoded_image_string))
    assert frames.n_frames == 1 + 2 * WINDOW and frames.size == (32, 32)
    assert {"sample/drift", "sample/mean_section_0", "sample/mean_section_1"} <= set(events.Tags()["scalars"])


def test_sample_video_logger_takes_its_inputs_from_the_batches_of_any_datamodule(toy_data):
    """The logger reads no shard files: start frames and captions come from the first training batches (which
    every datamodule's collate gives: shards, litdata chunks, raw clips), then stay fixed and go into checkpoints."""
    from lvg.callbacks import SampleVideoLogger
    from lvg.data.datamodule import collate_videos
    from lvg.models.encoders import PixelCodec

    data = toy_data
    items = [data.train_set[i] for i in range(3)]
    codec = data.encoders().codec
    callback = SampleVideoLogger(num_videos=2)
    for item in items:  # batches of one video each: the first two are kept, the third is not
        callback._collect(collate_videos([item]), data.encoders())
    images, prompts = callback._fixed
    assert prompts == [items[0]["caption"], items[1]["caption"]] and all(prompts)
    expected = PixelCodec(2).decode(torch.stack([it["latents"][:, :1] for it in items[:2]]))[:, 0]
    assert isinstance(codec, PixelCodec) and torch.equal(images, expected)
    restored = SampleVideoLogger(num_videos=2)
    restored.load_state_dict(callback.state_dict())
    assert torch.equal(restored._fixed[0], images) and restored._fixed[1] == prompts


def test_lvg_predict_writes_one_video_per_suite_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "teacher_forcing.yaml"), "--trainer.max_steps=1", *CLI_TINY])
    frames, _ = read_video(tmp_path / "data/toy_world/videos/toy_0001.mp4")
    Image.fromarray(frames[0]).save(tmp_path / "start.png")
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        json.dumps({"id": "short", "image": "start.png", "prompt": "a red circle", "sections": 1}) + "\n"
        + json.dumps({"id": "long", "image": "data/toy_world/videos/toy_0002.mp4",
                      "prompt": "[0s] a red circle [0.5s] a blue square", "seconds": 1.0}) + "\n"
    )
    predict = ["predict", "--config", str(CONFIGS / "teacher_forcing.yaml"), *CLI_TINY,
               "--ckpt_path", "runs/teacher_forcing/checkpoints/last.ckpt",
               f"--data.init_args.predict_suite={suite}", "--data.init_args.batch_size=2",
               "--model.init_args.sampling.steps=2",
               "--trainer.callbacks+=lvg.callbacks.VideoPredictionWriter",
               "--trainer.callbacks.output_dir=predictions"]
    main(predict)
    short, fps = read_video(tmp_path / "predictions/short.mp4")
    long, _ = read_video(tmp_path / "predictions/long.mp4")
    assert fps == 8 and short.shape[0] == 1 + WINDOW and long.shape[0] == 1 + 3 * WINDOW  # 1 s at 8 fps -> 3 sections
    assert np.array_equal(short[0], frames[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "image": "start.png", "prompt": "a"}) + "\n")
    with pytest.raises(SystemExit, match=r"bad.jsonl:1: give exactly one of 'seconds' and 'sections'"):
        main([*predict, f"--data.init_args.predict_suite={bad}"])


@pytest.mark.distributed
@pytest.mark.parametrize("stage, cls", [("teacher", TeacherForcingModule), ("direct", DirectForcingModule)])
def test_ddp_two_processes_equal_single_process_gradient_averaging(stage, cls, toy_root, tmp_path):
    """2 CPU processes (gloo DDP) == one process averaging the same two videos' gradients per step."""
    import subprocess
    import sys

    worker = Path(__file__).parent / "ddp_worker.py"
    result = subprocess.run([sys.executable, str(worker), str(toy_root), str(tmp_path), stage, "2"],
                            check=False, capture_output=True, text=True, cwd=Path(__file__).parent, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    assert ranks[0]["videos"] != ranks[1]["videos"]  # data sharded by rank
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # replicas stay identical

    reference, _ = replay_ranks_in_one_process(cls, toy_root, ranks)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_stage2_before_stage1_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "direct_forcing.yaml")])
    message = str(exit_.value.code)
    assert message == ("lvg: error: init_from: runs/teacher_forcing/checkpoints/last.ckpt does not exist; "
                       "pass a stage checkpoint (.ckpt) or .safetensors file.")
