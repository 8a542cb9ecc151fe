"""``lvg fit | validate | test | predict | generate``: LightningCLI with lvg's stage modules and datamodules.

A YAML picks the stage module and the datamodule by class path (subclass mode); callbacks and
loggers plug in under ``trainer``; ``--print_config`` shows the resolved config and ``--help``
documents every option from the code's docstrings. Each run saves its config next to its logs.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace, set_parsing_settings
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from lvg import __version__
from lvg.cli.configs import check_memory_world_context, expand_configs, fill_run_directory
from lvg.cli.errors import chain, raised_by_parser, reason
from lvg.media import load_image
from lvg.models.encoders import encoders_of
from lvg.prompts import PromptSchedule
from lvg.training.base import StageModule, read_weights

# Dataclass fields are documented by the string literal under them; show those in --help.
set_parsing_settings(docstring_parse_attribute_docstrings=True)
# Expected for lvg, so only noise for its users: stage modules step the optimizer manually once per
# video and checkpoint the post-step state on purpose; a datamodule without held-out videos
# returns no validation loader.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
# `main` always hands LightningCLI the words it parsed (without --debug), which Lightning warns about.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")

LAST_IF_PRESENT = "last_if_present"
"""``lvg fit --ckpt_path last_if_present``: resume from the last checkpoint if there is one, else start afresh."""
CKPT_PATH_NAMES = ("last", LAST_IF_PRESENT, "best", "hpc")
"""``--ckpt_path`` values that name a checkpoint to look up rather than a file."""


GENERATING = ("generate", "predict", "test")
"""Subcommands that generate videos from a checkpoint's weights under the configured model."""


class LvgTrainer(Trainer):
    """Lightning's Trainer plus :meth:`generate`, so generation shares configs, checkpoints and devices."""

    def generate(
        self,
        model: StageModule,
        image: str,
        prompt: str | None = None,
        prompt_file: str | None = None,
        seconds: float | None = None,
        sections: int | None = None,
        fps: float = 8.0,
        seed: int = 0,
        output: str = "outputs/video.mp4",
        ckpt_path: str | None = None,
        overwrite: bool = False,
        end_image: str | None = None,
        datamodule: LightningDataModule | None = None,
    ) -> list[Path]:
        """Generate a long video section by section from a start image and a prompt (or schedule).

        Args:
            model: the stage module (its DiT, SemanticPack and MemoryPack settings).
            image: start image file, or a video whose first frame starts the generation (resized and
                centre-cropped to the training frame size).
            prompt: a prompt, or a schedule such as ``"[0s] a cat walks [12s] the cat sits"``.
            prompt_file: a text file holding the prompt or schedule (instead of ``prompt``).
            seconds: video length (the number of sections is rounded from it).
            sections: number of sections (instead of ``seconds``).
            fps: frame rate of the output (toy world: 8; FramePack-F1: 30).
            seed: noise seed; the same seed gives the same video on any device.
            output: mp4 path; finished sections are kept in ``<output>.parts`` so a killed run resumes.
            ckpt_path: weights to generate with (a stage checkpoint or ``.safetensors`` export; ``last``:
                the newest last checkpoint of the config's ModelCheckpoint).
            overwrite: replace an existing output (otherwise refused).
            end_image: optional last frame to steer towards (experimental: only models trained with
                end frames use it well).
            datamodule: provides the encoders the model was trained with.
        """
        if (prompt is None) == (prompt_file is None):
            raise ValueError("generate: pass exactly one of --prompt and --prompt_file.")
        if prompt_file is not None:
            if not Path(prompt_file).is_file():
                raise ValueError(f"generate: prompt file {prompt_file} does not exist.")
            prompt = Path(prompt_file).read_text()
        schedule = PromptSchedule.parse(prompt)
        if (seconds is None) == (sections is None):
            raise ValueError("generate: pass exactly one of --seconds and --sections.")
        if seconds is not None and not seconds > 0:
            raise ValueError(f"generate: --seconds must be > 0, got {seconds:g}.")
        if sections is not None and sections < 1:
            raise ValueError(f"generate: --sections must be >= 1, got {sections}.")
        encoders = encoders_of(datamodule)
        if encoders is None:
            raise ValueError("generate: the datamodule in the config does not name its encoders (codec, text, image).")
        if ckpt_path is not None:
            model.load_weights(ckpt_path, argument="ckpt_path")
        device = self.strategy.root_device
        model.prepare_generation(device)
        model.to(device).eval()
        # Sampler settings live with the model (``model.sampling``), shared with ``lvg predict``.
        pipeline = model.pipeline(encoders)
        num_sections = sections if sections is not None else pipeline.sections_for(seconds, fps)
        end = load_image(end_image, encoders.frame_size) if end_image is not None else None
        paths = pipeline(load_image(image, encoders.frame_size), [schedule], num_sections=num_sections, fps=fps,
                         seed=seed, output=output, overwrite=overwrite, progress=self.progress_bar_callback is not None,
                         end_images=end)
        for path in paths:
            print(f"wrote {path} ({num_sections} sections, {num_sections * pipeline.frames_per_section() / fps:.1f} s)")
        return paths


class ConfigError(ValueError):
    """A config that cannot be parsed or whose classes cannot be built; the message is the one line to show."""


class LvgCLI(LightningCLI):
    """LightningCLI with lvg's stage modules and datamodules in subclass mode, and ``generate``."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "generate": {"model", "datamodule"}}

    def _parse_ckpt_path(self) -> None:
        command = self.config.get("subcommand")
        ckpt_path = self.config[command].get("ckpt_path") if command else None
        if ckpt_path and ckpt_path not in CKPT_PATH_NAMES and not re.match(r"\w+:", ckpt_path):  # not s3://, registry:
            # before anything is built: a missing or damaged file is one named line, not a traceback mid-run
            if not Path(ckpt_path).exists():
                raise ValueError(f"ckpt_path: {ckpt_path} does not exist; pass a checkpoint file or `last`.")
            if Path(ckpt_path).is_file() and Path(ckpt_path).suffix != ".safetensors":
                read_weights(Path(ckpt_path), "ckpt_path", mmap=True)
        # LightningCLI replaces the model config by the hyper-parameters stored in --ckpt_path. For
        # generation and benchmarks the command line must win (sampler settings, and no stale
        # `init_from` path to reload); the weights are still checked strictly against the configured model.
        if command in GENERATING:
            return
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        command = self.config.get("subcommand")
        config = self.config[command] if command else self.config
        fill_run_directory(config.trainer)
        check_memory_world_context(config)
        if command in GENERATING and self.config[command].get("ckpt_path"):
            self.config[command].model.init_args.init_from = None  # replaced by --ckpt_path's weights anyway

    def _run_subcommand(self, subcommand: str) -> None:
        self._running = True  # from here on errors are the run's own, no longer the config's
        super()._run_subcommand(subcommand)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") in ("last", LAST_IF_PRESENT):
            kwargs["ckpt_path"] = self._last_checkpoint(subcommand, kwargs["ckpt_path"])
        return kwargs

    def _last_checkpoint(self, subcommand: str, value: str) -> str | None:
        """``--ckpt_path last``: the newest last checkpoint of the config's ModelCheckpoint callbacks.
        Lightning starts from scratch (or evaluates untrained weights) when there is none; lvg refuses,
        except ``last_if_present`` under ``fit``."""
        if value == LAST_IF_PRESENT and subcommand != "fit":
            raise ValueError(f"ckpt_path: {LAST_IF_PRESENT} is for `lvg fit` (resume or start afresh); "
                             f"`lvg {subcommand}` needs weights: pass `last` or a checkpoint file.")
        callbacks = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        # Lightning's own lookup for "last" (last.ckpt, last-v1.ckpt, ... in the callback's directory)
        found = {path for c in callbacks for path in c._find_last_checkpoints(self.trainer)}
        if found:
            newest = max(found, key=os.path.getmtime)
            read_weights(Path(newest), f"ckpt_path={value} ({newest})", mmap=True)
            return newest
        where = ", ".join(str(c.dirpath or self.trainer.default_root_dir) for c in callbacks)
        if value == LAST_IF_PRESENT:
            print(f"lvg fit: no last checkpoint in {where}; starting afresh ({LAST_IF_PRESENT}).", file=sys.stderr)
            return None
        if not callbacks:
            raise ValueError("ckpt_path: 'last' needs a ModelCheckpoint callback under trainer.callbacks; none is "
                             "configured, so there is no last checkpoint. Pass a checkpoint file.")
        if subcommand == "fit":
            why = (f"nothing to resume; drop --ckpt_path to start afresh, or pass --ckpt_path {LAST_IF_PRESENT} to "
                   "resume only when there is one")
        else:
            why = f"no trained weights to {subcommand} with; train first (`lvg fit`) or pass a checkpoint file"
        raise ValueError(f"ckpt_path: 'last' but there is no last checkpoint in {where}: {why}.")

    def _set_seed(self) -> None:
        if not self._parse_only:
            super()._set_seed()

    def instantiate_classes(self) -> None:
        if not self._parse_only:
            super().instantiate_classes()

    @classmethod
    def read(cls, words: list[str]) -> Namespace:
        """The config ``lvg fit words...`` would run (defaults filled, ``base:`` and run directory applied,
        nothing built): how ``lvg plan`` reads a training YAML."""
        return cls(args=words, run=False, parse_only=True).config

    def __init__(self, args: list[str] | None = None, run: bool = True, parse_only: bool = False):
        self._running, self._parse_only = False, parse_only
        args = expand_configs(sys.argv[1:] if args is None else args)  # `base:` files become earlier --configs
        # the subcommand typed, to look up the options of a key jsonargparse calls unrecognized
        self._typed = next((w for w in (sys.argv[1:] if args is None else args) if w in self.subcommands()), None)
        # Parse errors raise instead of printing the whole usage: the except below makes them one line.
        no_exit = {"exit_on_error": False}
        try:
            super().__init__(
                StageModule,
                LightningDataModule,
                trainer_class=LvgTrainer,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_kwargs={"overwrite": True},  # a resumed run rewrites the config it was started with
                auto_configure_optimizers=False,  # stage modules own their optimizer (see StageModule)
                parser_kwargs={"description": f"lvg {__version__}: train, benchmark and generate long videos "
                               "(fit, validate, test, predict, generate; a YAML picks the stage module and the "
                               "datamodule). Also: `lvg prepare` (videos -> latent shards), `lvg plan` (memory per "
                               "GPU), `lvg compare` (benchmark reports side by side), `lvg export-lora` (adapters in "
                               "musubi-tuner's format), `lvg strip` (frame strips), `lvg info --model PRESET`.",
                               **no_exit, **{command: dict(no_exit) for command in self.subcommands()}},
                args=args,
                run=run,
            )
        except Exception as err:
            if self._running:
                raise
            # Whatever jsonargparse or Lightning raise while the config is parsed and the classes are built
            # is the user's config: one line with the reason (`--debug` shows the traceback).
            raise ConfigError(self._explain(err)) from err

    def _explain(self, err: Exception) -> str:
        """One line for an error raised while the config is parsed or its classes are built."""
        errors = chain(err)
        own = next((e for e in errors if not raised_by_parser(e)), None)
        if own is not None:  # a class or Lightning refused a value: its message says what is wrong
            return reason(own)
        # jsonargparse's own complaint, nested once per level: collect the key path it was parsing
        path, class_path, previous = [], None, None
        for e in errors:
            first = str(e).strip().split("\n", 1)[0]
            if first != previous and (m := re.match(r'Parser key "([^"]+)":', first)):
                path.append(m[1])
            elif first != previous and (m := re.match(r"Problem with given class_path '([^']+)':", first)):
                class_path = m[1]
                path.append("init_args")
            previous = first
        message = " ".join(str(errors[-1]).split())
        unknown = _unknown_key(message)
        if unknown is None:
            return f"{'.'.join(path)}: {message}" if path else message
        command, key = unknown
        prefix = "".join(f"{k}." for k in path)
        if class_path is not None:
            valid, where = _keys(_class_parser(class_path)), f" of {class_path}"
        else:
            valid, where = _keys(getattr(self, "_subcommand_parsers", {}).get(command or self._typed, self.parser)), ""
        near = _nearest(key, valid)
        hint = f"did you mean '{prefix}{near}'?" if near else "`--help` lists the options."
        return f"{prefix}{key}: no such option{where}; {hint}"


_UNKNOWN_KEY = re.compile(
    r"(?:Subcommand '(?P<command>[\w-]+)' |Group '(?P<group>[\w.]+)' )?does not accept option '(?P<option>[^']+)'"
    r"|Option '(?P<key>[^']+)' is not accepted|unrecognized arguments: --(?P<argument>[^\s=]+)"
)


def _unknown_key(reason: str) -> tuple[str | None, str] | None:
    """``(subcommand or None, dotted key)`` when jsonargparse's ``reason`` is an option it does not know."""
    m = _UNKNOWN_KEY.search(reason)
    if m is None:
        return None
    if m["option"]:
        return m["command"], f"{m['group']}.{m['option']}" if m["group"] else m["option"]
    return None, m["key"] or m["argument"]


def _nearest(key: str, valid: list[str]) -> str | None:
    """The valid key closest to ``key``; else ``key`` with its first part corrected (``modle.x`` -> ``model.x``)."""
    if near := difflib.get_close_matches(key, valid, n=1, cutoff=0.6):
        return near[0]
    head, dot, rest = key.partition(".")
    heads = difflib.get_close_matches(head, sorted({v.split(".")[0] for v in valid}), n=1, cutoff=0.6)
    return heads[0] + dot + rest if heads else None


def _class_parser(class_path: str) -> ArgumentParser:
    module, _, name = class_path.rpartition(".")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(getattr(importlib.import_module(module), name))
    return parser


def _keys(parser: ArgumentParser) -> list[str]:
    """Every option of ``parser`` as a dotted key (``trainer.max_steps``, ``memory_pack.window``)."""
    return list(parser.get_defaults().keys())
