"""The ``lvg`` command.

Subcommands arrive with their issues (``fit``/``validate``/``test``/``predict`` on LightningCLI,
``generate``, ``prepare``, ``plan``); today: ``lvg info``, which inspects a model preset.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import torch
from jsonargparse import ArgumentParser

from lvg import __version__
from lvg.config import DIT_PRESETS, DiTConfig
from lvg.models.dit import PackedDiT

DIRECT_FORCING_MODULES = ("norm_out", "proj_out")
"""What stage 2 (Direct Forcing) trains by default."""


def model_info(preset: str) -> dict:
    """Config and parameter counts of a preset, built on the meta device (no memory allocated)."""
    config = DiTConfig.from_name(preset)
    with torch.device("meta"):
        model = PackedDiT(config)
    per_module: Counter[str] = Counter()
    for name, p in model.named_parameters():
        per_module[name.split(".")[0]] += p.numel()
    return {
        "preset": preset,
        "config": config.to_dict(),
        "parameters": sum(per_module.values()),
        "parameters_per_module": dict(per_module),
        "direct_forcing_trainable": sum(per_module[m] for m in DIRECT_FORCING_MODULES),
    }


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lvg", description=__doc__.split("\n\n")[0], env_prefix="LVG", default_env=False)
    parser.add_argument("--version", action="version", version=f"lvg {__version__}")
    subcommands = parser.add_subcommands(dest="command")
    info = ArgumentParser(description="Print a DiT preset's config and parameter counts as JSON.")
    info.add_argument("--model", type=str, default="toy", help=f"DiT preset, one of {sorted(DIT_PRESETS)}.")
    subcommands.add_subcommand("info", info, help="Inspect a model preset (parameter counts, config).")
    return parser


def main(argv: list[str] | None = None) -> None:
    cfg = build_parser().parse_args(argv)
    if cfg.command == "info":
        try:
            print(json.dumps(model_info(cfg.info.model), indent=2))
        except ValueError as err:
            sys.exit(f"lvg info: {err}")
