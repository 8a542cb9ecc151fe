"""The ``lvg`` command: LightningCLI for ``fit | validate | test | predict | generate``, plus ``lvg info``,
``lvg prepare``, ``lvg plan`` and ``lvg compare``.

A YAML picks the stage module and the datamodule by class path (subclass mode); callbacks and
loggers plug in under ``trainer``; ``--print_config`` shows the resolved config and ``--help``
documents every option from the code's docstrings. Each run saves its config next to its logs.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, set_parsing_settings
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningCLI

from lvg import __version__
from lvg.config import DIT_PRESETS, DiTConfig
from lvg.data.video_io import load_image
from lvg.models.dit import PackedDiT
from lvg.sampling.offload import enable_block_offload
from lvg.sampling.pipeline import LongVideoPipeline
from lvg.sampling.prompts import PromptSchedule
from lvg.training.base import TRAINABLE_GROUPS, StageModule

# Dataclass fields are documented by the string literal under them; show those in --help.
set_parsing_settings(docstring_parse_attribute_docstrings=True)
# Expected for lvg, so only noise for its users: stage modules step the optimizer manually once per
# video and checkpoint the post-step state on purpose; a datamodule without held-out videos
# returns no validation loader.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")


def model_info(preset: str) -> dict:
    """Config and parameter counts of a preset, built on the meta device (no memory allocated)."""
    config = DiTConfig.from_name(preset)
    with torch.device("meta"):
        model = PackedDiT(config)
    per_module: Counter[str] = Counter()
    for name, p in model.named_parameters():
        per_module[name.split(".")[0]] += p.numel()
    output_layer = {prefix.split(".")[1] for prefix in TRAINABLE_GROUPS["output_layer"]}
    return {
        "preset": preset,
        "config": config.to_dict(),
        "parameters": sum(per_module.values()),
        "parameters_per_module": dict(per_module),
        "direct_forcing_trainable": sum(per_module[m] for m in output_layer),
    }


def info_main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="lvg info", description="Print a DiT preset's config and parameter counts as JSON.")
    parser.add_argument("--model", type=str, default="toy", help=f"DiT preset, one of {sorted(DIT_PRESETS)}.")
    cfg = parser.parse_args(argv)
    try:
        print(json.dumps(model_info(cfg.model), indent=2))
    except ValueError as err:
        sys.exit(f"lvg info: {err}")


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
            ckpt_path: weights to generate with (a stage checkpoint or ``.safetensors`` export).
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
        encoders = datamodule.encoders() if datamodule is not None and hasattr(datamodule, "encoders") else None
        if encoders is None:
            raise ValueError("generate: the datamodule in the config does not name its encoders (codec, text, image).")
        if ckpt_path is not None:
            model.load_weights(ckpt_path, argument="ckpt_path")
        device = self.strategy.root_device
        if model.sampling_config.offload:  # the DiT's blocks stay in CPU memory (.to() skips them); streamed
            enable_block_offload(model.dit, device)
        model.to(device).eval()
        # Sampler settings live with the model (``model.sampling``), shared with ``lvg predict``.
        pipeline = LongVideoPipeline(model.dit, model.memory_pack_config, encoders, model.semantic_pack,
                                     model.sampling_config, device=device)
        num_sections = sections if sections is not None else pipeline.sections_for(seconds, fps)
        end = load_image(end_image, encoders.frame_size) if end_image is not None else None
        paths = pipeline(load_image(image, encoders.frame_size), [schedule], num_sections=num_sections, fps=fps,
                         seed=seed, output=output, overwrite=overwrite, progress=self.progress_bar_callback is not None,
                         end_images=end)
        for path in paths:
            print(f"wrote {path} ({num_sections} sections, {num_sections * pipeline.frames_per_section() / fps:.1f} s)")
        return paths


class LvgCLI(LightningCLI):
    """LightningCLI with lvg's stage modules and datamodules in subclass mode, and ``generate``."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "generate": {"model", "datamodule"}}

    def _parse_ckpt_path(self) -> None:
        # LightningCLI replaces the model config by the hyper-parameters stored in --ckpt_path. For
        # generation and benchmarks the command line must win (sampler settings, and no stale
        # `init_from` path to reload); the weights are still checked strictly against the configured model.
        if self.config.get("subcommand") in GENERATING:
            return
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        command = self.config.get("subcommand")
        if command in GENERATING and self.config[command].get("ckpt_path"):
            self.config[command].model.init_args.init_from = None  # replaced by --ckpt_path's weights anyway

    def __init__(self, args: list[str] | None = None, run: bool = True):
        super().__init__(
            StageModule,
            LightningDataModule,
            trainer_class=LvgTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},  # a resumed run rewrites the config it was started with
            auto_configure_optimizers=False,  # stage modules own their optimizer (see StageModule)
            parser_kwargs={"description": f"lvg {__version__}: " + __doc__.split("\n\n")[0]
                           + " Also: `lvg prepare` (videos -> latent shards), `lvg plan` (memory per GPU), `lvg compare` "
                           "(benchmark reports side by side), `lvg export-lora` (adapters in musubi-tuner's "
                           "format), `lvg info --model PRESET`."},
            args=args,
            run=run,
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point; ``argv`` defaults to the command line."""
    words = sys.argv[1:] if argv is None else argv
    tools = {"info": lambda: info_main, "prepare": _prepare_main, "plan": _plan_main, "compare": _compare_main,
             "export-lora": _export_lora_main, "strip": lambda: strip_main}
    if words[:1] and words[0] in tools:
        try:
            tools[words[0]]()(words[1:])
        except ValueError as err:
            sys.exit(f"lvg {words[0]}: error: {_root_cause(err)}")
    elif words[:1] == ["--version"]:
        print(f"lvg {__version__}")
    else:
        try:
            LvgCLI(args=argv)
        except ValueError as err:  # user mistakes (bad files, inputs, checkpoints): the message, no traceback
            sys.exit(f"lvg: error: {_root_cause(err)}")


def strip_main(argv: list[str]) -> None:
    """``lvg strip VIDEO... --output strip.png``: evenly spaced frames of each video, one row per video."""
    import argparse

    from PIL import Image

    from lvg.data.video_io import frame_strip, read_video
    from lvg.io import atomic_path

    parser = argparse.ArgumentParser(prog="lvg strip", description=strip_main.__doc__)
    parser.add_argument("videos", nargs="+", help="mp4 files, one row each (e.g. a generation, then its ground truth)")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--frames", type=int, default=8, help="frames per row, first to last (default 8)")
    parser.add_argument("--scale", type=int, default=4, help="pixel enlargement, nearest neighbour (default 4)")
    args = parser.parse_args(argv)
    strip = frame_strip([read_video(v)[0] for v in args.videos], frames=args.frames, scale=args.scale)
    with atomic_path(args.output, suffix=".png") as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    print(f"wrote {args.output} ({len(args.videos)} rows x {args.frames} frames)")


def _prepare_main():
    from lvg.data.prepare import prepare_main

    return prepare_main


def _plan_main():
    from lvg.plan import plan_main

    return plan_main


def _compare_main():
    from lvg.metrics.report import compare_main

    return compare_main


def _export_lora_main():
    from lvg.models.lora import export_main

    return export_main


def _root_cause(err: BaseException) -> BaseException:
    """The innermost error of a chain: jsonargparse wraps a constructor's ValueError into a message that
    lists every Union alternative and dumps the whole parsed config, burying the one line that matters."""
    while (inner := err.__cause__ or err.__context__) is not None and isinstance(inner, ValueError):
        err = inner
    return err
