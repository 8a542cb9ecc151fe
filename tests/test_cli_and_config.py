"""The `lvg` command and the preset registry."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lvg.cli import main
from lvg.config import DIT_PRESETS, DiTConfig


def test_lvg_help_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "lvg info" in out and all(cmd in out for cmd in ("fit", "validate", "test", "predict"))
    main(["--version"])
    assert capsys.readouterr().out.startswith("lvg ")


def test_lvg_info_framepack_f1_counts_parameters_on_meta(capsys):
    main(["info", "--model", "framepack-f1"])
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == sum(info["parameters_per_module"].values())
    assert 12.5e9 < info["parameters"] < 13.5e9
    assert info["direct_forcing_trainable"] == 19_077_184  # norm_out.linear + proj_out, "~19.1M"


def test_lvg_info_unknown_preset_is_a_clear_error():
    with pytest.raises(SystemExit, match="Unknown DiT preset 'nope'; choose one of"):
        main(["info", "--model", "nope"])


def test_python_dash_m_lvg_works():
    out = subprocess.run([sys.executable, "-m", "lvg", "info", "--model", "debug"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["config"] == DIT_PRESETS["debug"].to_dict()


@pytest.mark.parametrize("name", sorted(DIT_PRESETS))
def test_presets_round_trip_through_config_json(name):
    cfg = DiTConfig.from_name(name)
    assert DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_validation():
    with pytest.raises(ValueError, match="must sum to attention_head_dim"):
        DiTConfig.from_name("toy", rope_axes_dim=(8, 8, 8))
    with pytest.raises(ValueError, match="must be even"):
        DiTConfig(num_attention_heads=1, attention_head_dim=9, rope_axes_dim=(3, 3, 3))
    assert DiTConfig.from_name("toy", num_layers=4).num_layers == 4


# --- bad input: one `lvg: error:` line naming the file or field, no traceback, before any work ----------

CONFIGS = Path(__file__).parents[1] / "configs"
STAGE1, STAGE2 = str(CONFIGS / "teacher_forcing.yaml"), str(CONFIGS / "direct_forcing.yaml")


def refused(argv: list[str], capsys) -> str:
    """``lvg ARGV`` as a user types it: it must exit non-zero with one ``lvg: error:`` line and no traceback."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    message = exit_.value.code  # a message: exit status 1
    assert isinstance(message, str) and message.startswith("lvg: error: ") and "\n" not in message, message
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return message


@pytest.fixture
def damaged(tmp_path, monkeypatch) -> dict[str, Path]:
    """A truncated checkpoint, a text file named .ckpt and a truncated .safetensors, in the working directory."""
    monkeypatch.chdir(tmp_path)  # the configs' relative runs/ and data/ paths land in tmp
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, "good.ckpt")
    whole = Path("good.ckpt").read_bytes()
    Path("truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    Path("notes.ckpt").write_text("not a checkpoint\n")
    Path("truncated.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{")
    return {"truncated": Path("truncated.ckpt"), "notes": Path("notes.ckpt"),
            "safetensors": Path("truncated.safetensors")}


@pytest.mark.parametrize("file", ["truncated", "notes", "missing"])
@pytest.mark.parametrize("command", ["fit", "validate", "test", "generate"])
def test_a_damaged_or_missing_ckpt_path_is_refused_naming_the_file(command, file, damaged, capsys):
    path = damaged.get(file, Path("missing.ckpt"))
    argv = [command, "--config", STAGE1, "--ckpt_path", str(path)]
    if command == "generate":
        argv += ["--image", "start.png", "--prompt", "a red circle", "--sections", "1"]
    message = refused(argv, capsys)
    problem = "does not exist; pass a checkpoint file or `last`" if file == "missing" else "is damaged or not a"
    assert f"ckpt_path: {path} {problem}" in message
    assert not Path("runs").exists() and not Path("data").exists()  # refused before anything was built or run


def test_a_damaged_safetensors_export_is_refused_naming_the_file(damaged, capsys):
    message = refused(["generate", "--config", STAGE1, "--ckpt_path", str(damaged["safetensors"]), "--image", "x.png",
                       "--prompt", "a", "--sections", "1"], capsys)
    assert "ckpt_path: truncated.safetensors is damaged or not a checkpoint (Error while deserializing" in message


@pytest.mark.parametrize("file", ["truncated", "notes"])
def test_a_damaged_init_from_is_one_line_like_a_missing_file(file, damaged, capsys):
    message = refused(["fit", "--config", STAGE2, f"--model.init_args.init_from={damaged[file]}"], capsys)
    assert message == (f"lvg: error: init_from: {damaged[file]} is damaged or not a checkpoint (torch checkpoints are "
                       "zip archives and this file is not one: truncated, or another format); pass a stage checkpoint "
                       "(.ckpt) or .safetensors file.")


@pytest.mark.parametrize(
    "yaml, message",
    [
        ("model:\n  init_args:\n    memory_pack:\n      rope_time_mod: absolute\n",
         ("model.init_args.memory_pack.rope_time_mod: no such option of lvg.training.TeacherForcingModule; "
          "did you mean 'model.init_args.memory_pack.rope_time_mode'?")),
        ("model:\n  init_args:\n    lrr: 0.1\n",
         ("model.init_args.lrr: no such option of lvg.training.TeacherForcingModule; "
          "did you mean 'model.init_args.lr'?")),
        ("data:\n  init_args:\n    toy:\n      num_vidoes: 3\n",
         ("data.init_args.toy.num_vidoes: no such option of lvg.data.datamodule.ToyWorldDataModule; "
          "did you mean 'data.init_args.toy.num_videos'?")),
        ("trainer:\n  max_stepz: 3\n", "trainer.max_stepz: no such option; did you mean 'trainer.max_steps'?"),
        ("model:\n  init_args:\n    lr: fast\n", "model.init_args.lr: Expected a <class 'float'>. Got value: fast"),
    ],
    ids=["model-dataclass-key", "model-key", "data-key", "trainer-key", "bad-value"],
)
def test_a_config_typo_names_the_key_and_the_nearest_valid_one(yaml, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("typo.yaml").write_text(yaml)
    assert refused(["fit", "--config", STAGE1, "--config", "typo.yaml"], capsys) == f"lvg: error: {message}"


def test_ckpt_path_last_refuses_to_start_afresh_and_last_if_present_may(tmp_path, monkeypatch, capsys):
    from lvg.cli import LvgTrainer

    monkeypatch.chdir(tmp_path)
    resumed_from = []

    @functools.wraps(LvgTrainer.fit)  # the same signature: the parser reads fit's options from it
    def fit(self, *args, **kwargs):
        resumed_from.append(kwargs["ckpt_path"])

    monkeypatch.setattr(LvgTrainer, "fit", fit)
    checkpoints = tmp_path / "runs/teacher_forcing/checkpoints"
    message = refused(["fit", "--config", STAGE1, "--ckpt_path", "last"], capsys)
    assert message == (f"lvg: error: ckpt_path: 'last' but there is no last checkpoint in {checkpoints}: nothing to "
                       "resume; drop --ckpt_path to start afresh, or pass --ckpt_path last_if_present to resume only "
                       "when there is one.")
    for command in ("validate", "test"):
        assert "no trained weights to" in refused([command, "--config", STAGE1, "--ckpt_path", "last"], capsys)
    assert "is for `lvg fit`" in refused(["test", "--config", STAGE1, "--ckpt_path", "last_if_present"], capsys)
    main(["fit", "--config", STAGE1, "--ckpt_path", "last_if_present"])
    assert resumed_from == [None] and "starting afresh" in capsys.readouterr().err
    checkpoints.mkdir(parents=True)
    torch.save({"state_dict": {}}, checkpoints / "last.ckpt")
    for value in ("last", "last_if_present"):
        main(["fit", "--config", STAGE1, "--ckpt_path", value])
    assert resumed_from[1:] == [str(checkpoints / "last.ckpt")] * 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seconds", "0"], "generate: --seconds must be > 0, got 0."),
        (["--seconds", "-3"], "generate: --seconds must be > 0, got -3."),
        (["--sections", "0"], "generate: --sections must be >= 1, got 0."),
        (["--sections", "-1"], "generate: --sections must be >= 1, got -1."),
        (["--sections", "1", "--prompt", "[abc] x"], "Prompt schedule: [abc] is not a timestamp"),
        (["--sections", "1", "--prompt", "[-5s] x"], "Prompt schedule: timestamp [-5s] is negative"),
        (["--sections", "1", "--prompt", "[0s] a [1:99] b"], "[1:99]: the seconds after the colon must be below 60"),
    ],
)
def test_generate_refuses_a_bad_length_or_schedule(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--config", STAGE1, "--image", "start.png", "--prompt", "a red circle", *args]
    assert message in refused(argv, capsys)


def test_errors_while_classes_are_built_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from lvg.cli import ConfigError

    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", STAGE1, "--trainer.devices=banana"]  # Lightning's Trainer refuses it
    assert "should be an int > 0" in refused(argv, capsys)
    with pytest.raises(ConfigError, match="should be an int > 0") as err:
        main([*argv, "--debug"])
    assert err.value.__cause__ is not None  # the original error, with its traceback
    monkeypatch.setenv("LVG_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(argv)


def test_the_lvg_command_prints_one_line_and_no_traceback(tmp_path):
    command = [sys.executable, "-m", "lvg", "fit", "--config", STAGE1, "--trainer.max_stepz=3"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert [line for line in done.stderr.splitlines() if "error" in line] == [
        "lvg: error: trainer.max_stepz: no such option; did you mean 'trainer.max_steps'?"]


# --- reading training YAMLs: base composition and the run directory ---------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _resolved(*words):
    from lvg.cli import LvgCLI

    return LvgCLI.read(list(words)).as_dict()


def test_base_is_the_same_as_an_earlier_config(tmp_path):
    """``base: recipe.yaml`` in a file == ``--config recipe.yaml --config file``: jsonargparse's own merge
    (nested keys merge, init_args survive a class_path change)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/recipe.yaml").write_text(
        "trainer: {max_steps: 7, log_every_n_steps: 3}\n"
        "model: {class_path: lvg.training.TeacherForcingModule, init_args: {warmup_steps: 77, lr: 0.5}}\n"
        "data: {class_path: lvg.data.datamodule.ToyWorldDataModule, init_args: {root: data/x}}\n")
    body = "trainer: {max_steps: 9}\nmodel: {class_path: lvg.training.DirectForcingModule, init_args: {lr: 0.1}}\n"
    (tmp_path / "stage.yaml").write_text("base: sub/recipe.yaml\n" + body)
    (tmp_path / "plain.yaml").write_text(body)
    composed = _resolved("--config", str(tmp_path / "stage.yaml"))
    layered = _resolved("--config", str(tmp_path / "sub/recipe.yaml"), "--config", str(tmp_path / "plain.yaml"))
    composed.pop("config"), layered.pop("config")  # the files read: the stage's body is passed as text
    assert composed == layered
    assert composed["trainer"]["max_steps"] == 9 and composed["trainer"]["log_every_n_steps"] == 3
    assert composed["model"]["class_path"] == "lvg.training.DirectForcingModule"
    assert composed["model"]["init_args"]["lr"] == 0.1 and composed["model"]["init_args"]["warmup_steps"] == 77
    assert composed["data"]["init_args"]["root"] == "data/x"


def test_a_bad_base_is_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    (tmp_path / "d.yaml").write_text("base: {x: 1}\n")
    for name, message in [("a", "includes itself"), ("c", "missing.yaml"), ("d", "must be a config path")]:
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "--config", str(tmp_path / f"{name}.yaml")])
        assert str(exit_.value.code).startswith("lvg: error: --config ") and message in exit_.value.code


def test_the_toy_stages_share_one_recipe():
    """The three toy stages differ only in what makes them a stage; model and data come from the recipe."""
    stages = {n: _resolved("--config", str(CONFIGS / f"{n}.yaml"))
              for n in ("teacher_forcing", "direct_forcing", "student_forcing")}
    recipe = _resolved("--config", str(CONFIGS / "toy/recipe.yaml"))
    for name, config in stages.items():
        for key in ("dit", "memory_pack", "semantic_pack", "sampling"):
            assert config["model"]["init_args"][key] == recipe["model"]["init_args"][key], (name, key)
        assert config["data"]["init_args"]["root"] == recipe["data"]["init_args"]["root"]
        assert config["trainer"]["default_root_dir"] == f"runs/{name}"
        assert config["trainer"]["accelerator"] == "cpu"
    assert stages["direct_forcing"]["model"]["class_path"] == "lvg.training.DirectForcingModule"
    assert stages["direct_forcing"]["data"]["init_args"]["order"] == "curriculum"
    assert stages["teacher_forcing"]["data"]["init_args"]["order"] != "curriculum"


def test_framepack_stage1_builds_on_the_fsdp_fragment():
    stage1 = _resolved("--config", str(CONFIGS / "framepack_f1/stage1.yaml"))
    fsdp = yaml_load(CONFIGS / "trainer/fsdp.yaml")["trainer"]
    assert stage1["trainer"]["strategy"]["class_path"] == fsdp["strategy"]["class_path"]
    for key, value in fsdp["strategy"]["init_args"].items():
        assert stage1["trainer"]["strategy"]["init_args"][key] == value
    assert stage1["trainer"]["precision"] == fsdp["precision"] and stage1["trainer"]["devices"] == 8


def yaml_load(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())


def test_the_run_directory_is_named_once():
    """``trainer.default_root_dir`` places checkpoints and TensorBoard logs; explicit settings win."""
    from jsonargparse import Namespace

    from lvg.cli.configs import fill_run_directory

    checkpoint = "lightning.pytorch.callbacks.ModelCheckpoint"
    trainer = Namespace(default_root_dir="runs/x", logger=None, callbacks=[
        Namespace(class_path=checkpoint, init_args=Namespace(dirpath=None, every_n_train_steps=5)),
        Namespace(class_path=checkpoint, init_args=Namespace(dirpath="elsewhere")),
        Namespace(class_path="lvg.callbacks.SampleVideoLogger", init_args=Namespace(every_n_steps=5))])
    fill_run_directory(trainer)
    assert [c.init_args.get("dirpath") for c in trainer.callbacks] == ["runs/x/checkpoints", "elsewhere", None]
    assert trainer.logger.class_path.endswith("TensorBoardLogger")
    assert (trainer.logger.init_args.save_dir, trainer.logger.init_args.name, trainer.logger.init_args.version) == (
        "runs/x", "tensorboard", "")
    off = Namespace(default_root_dir="runs/x", logger=False, callbacks=None)
    fill_run_directory(off)
    assert off.logger is False  # `--trainer.logger false` stays off
    unnamed = Namespace(default_root_dir=None, logger=None, callbacks=[Namespace(class_path=checkpoint,
                                                                                 init_args=Namespace(dirpath=None))])
    fill_run_directory(unnamed)
    assert unnamed.logger is None and unnamed.callbacks[0].init_args.dirpath is None  # Lightning's defaults


def test_instantiate_works_on_old_and_new_jsonargparse():
    from jsonargparse import ArgumentParser

    from lvg.cli.configs import instantiate

    class Old:  # what jsonargparse < 4.49 offers: only instantiate_classes
        def __init__(self, parser):
            self.instantiate_classes = parser.instantiate_classes

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DiTConfig, "dit")
    cfg = parser.parse_object({"dit": {"num_layers": 3}})
    for wrapped in (parser, Old(parser)):
        assert instantiate(wrapped, cfg).dit.num_layers == 3


def test_the_memory_world_must_match_the_models_context(tmp_path, monkeypatch):
    from lvg.cli import ConfigError

    monkeypatch.chdir(tmp_path)
    stage = ["--config", str(CONFIGS / "teacher_forcing.yaml"), "--data.init_args.toy.world=memory"]
    with pytest.raises(ConfigError, match=r"data.init_args.toy.context \(window 9.*memory_pack \(window 3"):
        _resolved(*stage, "--model.init_args.memory_pack.window=3")
    both = _resolved(*stage, "--model.init_args.memory_pack.window=3", "--data.init_args.toy.context.window=3")
    assert both["data"]["init_args"]["toy"]["context"]["window"] == 3
    # the default world does not depend on the context: any window trains on it
    assert _resolved("--config", str(CONFIGS / "teacher_forcing.yaml"),
                     "--model.init_args.memory_pack.window=3")["model"]["init_args"]["memory_pack"]["window"] == 3
    assert not (tmp_path / "runs").exists()


def test_an_unknown_command_names_the_commands():
    with pytest.raises(SystemExit) as exit_:
        main(["preapre", "--manifest", "m.jsonl"])
    message = str(exit_.value.code)
    assert message.startswith("lvg: error: no command 'preapre'; did you mean 'prepare'? the commands are")
    assert all(command in message for command in ("fit", "generate", "plan", "strip", "export-lora"))
