"""The ``lvg`` command: LightningCLI for ``fit | validate | test | predict``, plus ``lvg info``.

A YAML picks the stage module and the datamodule by class path (subclass mode); callbacks and
loggers plug in under ``trainer``; ``--print_config`` shows the resolved config and ``--help``
documents every option from the code's docstrings. Each run saves its config next to its logs.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import torch
from jsonargparse import ArgumentParser, set_parsing_settings
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from lvg import __version__
from lvg.config import DIT_PRESETS, DiTConfig
from lvg.models.dit import PackedDiT
from lvg.training.base import TRAINABLE_GROUPS, StageModule

# Dataclass fields are documented by the string literal under them; show those in --help.
set_parsing_settings(docstring_parse_attribute_docstrings=True)


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


class LvgCLI(LightningCLI):
    """LightningCLI with lvg's stage modules and datamodules in subclass mode."""

    def __init__(self, args: list[str] | None = None, run: bool = True):
        super().__init__(
            StageModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},  # a resumed run rewrites the config it was started with
            auto_configure_optimizers=False,  # stage modules own their optimizer (see StageModule)
            parser_kwargs={"description": f"lvg {__version__}: " + __doc__.split("\n\n")[0]
                           + " `lvg info --model PRESET` inspects a model preset."},
            args=args,
            run=run,
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point; ``argv`` defaults to the command line."""
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["info"]:
        info_main(words[1:])
    elif words[:1] == ["--version"]:
        print(f"lvg {__version__}")
    else:
        LvgCLI(args=argv)
