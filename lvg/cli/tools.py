"""The ``lvg`` commands that are not a Lightning run: ``info``, ``prepare``, ``plan``, ``compare``,
``export-lora`` and ``strip``. Each is ``name_main(argv)`` with a jsonargparse parser; user mistakes
raise ``ValueError`` and :func:`lvg.cli.main` prints them as one line."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

from lvg.cli.configs import expand_configs, instantiate, read_layer
from lvg.config import DIT_PRESETS, DTYPES, DiTConfig
from lvg.io import atomic_path, atomic_write_text
from lvg.models.dit import PackedDiT
from lvg.training.base import TRAINABLE_GROUPS


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
    """``lvg info --model PRESET``."""
    parser = ArgumentParser(prog="lvg info", description="Print a DiT preset's config and parameter counts as JSON.")
    parser.add_argument("--model", type=str, default="toy", help=f"DiT preset, one of {sorted(DIT_PRESETS)}.")
    cfg = parser.parse_args(argv)
    print(json.dumps(model_info(cfg.model), indent=2))


def plan_main(argv: list[str]) -> None:
    """``lvg plan --config STAGE.yaml | --model PRESET``: memory per GPU of a training or generation config."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lvg.cli.configs import build_model
    from lvg.cli.lightning import LvgCLI
    from lvg.plan import DTYPE_BYTES, format_plan, plan_stage

    parser = ArgumentParser(prog="lvg plan", description=plan_main.__doc__)
    parser.add_argument("--config", type=str | None, default=None,
                        help="a stage YAML config, read as `lvg fit --config` reads it (base:, defaults)")
    parser.add_argument("--model", type=str | None, default=None,
                        help="instead of --config: a DiT preset (trainable: all, window 9), "
                             f"one of {sorted(DIT_PRESETS)}")
    parser.add_argument("--strategy", type=Literal["single", "ddp", "fsdp"] | None, default=None,
                        help="default: fsdp when the config's trainer uses FSDPStrategy, else single / ddp by devices")
    parser.add_argument("--devices", type=int | None, default=None, help="GPUs (default: the config's trainer.devices)")
    parser.add_argument("--precision", type=Literal[tuple(sorted(DTYPE_BYTES))] | None, default=None)
    parser.add_argument("--mode", type=Literal["train", "generate"], default="train")
    parser.add_argument("--offload", action=ActionYesNo, default=False, help="generate: keep only 2 blocks on the GPU")
    parser.add_argument("--latent", type=int, nargs=2, default=None, help="latent H W (default: from frame_size)")
    parser.add_argument("--json", action=ActionYesNo, default=False, help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.model is None):
        raise ValueError("pass exactly one of --config (a stage YAML) and --model (a DiT preset).")
    if args.config is not None:
        if not Path(args.config).is_file():
            raise ValueError(f"--config {args.config}: no such file; pass a stage config such as "
                             "configs/framepack_f1/stage1.yaml.")
        config = LvgCLI.read(["--config", args.config]).as_dict()
        trainer, model, data, title = config["trainer"], config["model"], config.get("data"), args.config
    else:
        trainer, model, data, title = {}, {"class_path": "lvg.training.TeacherForcingModule",
                                           "init_args": {"dit": args.model}}, None, args.model
    with FakeTensorMode():
        plan = plan_stage(build_model(model), trainer, data, strategy=args.strategy, devices=args.devices,
                          precision=args.precision, mode=args.mode, offload=args.offload, latent=args.latent)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan, title))


def compare_main(argv: list[str]) -> None:
    """``lvg compare REPORT [REPORT ...]``: several ``lvg test`` reports as rows of one table."""
    from lvg.metrics.report import compare

    parser = ArgumentParser(prog="lvg compare", description=compare_main.__doc__)
    parser.add_argument("reports", nargs="+", help="report.json files (or their directories) written by lvg test.")
    parser.add_argument("--names", type=list[str] | None, default=None, help="row names (default: the reports' names).")
    parser.add_argument("--group", type=str | None, default=None, help="compare one length group (e.g. long).")
    parser.add_argument("--preferences", type=str | None, default=None,
                        help="pairwise A/B preferences (JSONL or CSV) for an ELO column; models named as the rows.")
    parser.add_argument("--output", type=str | None, default=None, help="also write the table to this file.")
    cfg = parser.parse_args(argv)
    table = compare(cfg.reports, cfg.names, cfg.preferences, cfg.group)
    if cfg.output:
        atomic_write_text(Path(cfg.output), table)
    print(table)


def export_lora_main(argv: list[str]) -> None:
    """``lvg export-lora CHECKPOINT OUT [--dtype bfloat16]``."""
    from lvg.training.export import export_checkpoint_lora

    parser = ArgumentParser(prog="lvg export-lora", description="Write the LoRA adapters of a stage checkpoint as "
                            "a musubi-tuner/kohya FramePack LoRA (.safetensors) for FramePack tools.")
    parser.add_argument("checkpoint", type=str, help="stage .ckpt file or sharded checkpoint directory")
    parser.add_argument("out", type=str, help="output .safetensors file")
    parser.add_argument("--dtype", type=str | None, default=None, help="cast A/B, e.g. bfloat16 (default: keep)")
    cfg = parser.parse_args(argv)
    if cfg.dtype is not None and cfg.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}.")
    path = export_checkpoint_lora(cfg.checkpoint, cfg.out, DTYPES.get(cfg.dtype))
    print(f"wrote {path}")


def strip_main(argv: list[str]) -> None:
    """``lvg strip VIDEO... --output strip.png``: evenly spaced frames of each video, one row per video."""
    from PIL import Image

    from lvg.media import frame_strip, read_video

    parser = ArgumentParser(prog="lvg strip", description=strip_main.__doc__)
    parser.add_argument("videos", nargs="+", help="mp4 files, one row each (e.g. a generation, then its ground truth)")
    parser.add_argument("--output", type=str, required=True, help="PNG to write")
    parser.add_argument("--frames", type=int, default=8, help="frames per row, first to last")
    parser.add_argument("--scale", type=int, default=4, help="pixel enlargement, nearest neighbour")
    args = parser.parse_args(argv)
    strip = frame_strip([read_video(v)[0] for v in args.videos], frames=args.frames, scale=args.scale)
    with atomic_path(args.output, suffix=".png") as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
    print(f"wrote {args.output} ({len(args.videos)} rows x {args.frames} frames)")


def _prepare_parser() -> ArgumentParser:
    from lightning.pytorch import LightningDataModule

    from lvg.data.prepare import PrepareConfig

    parser = ArgumentParser(
        prog="lvg prepare",
        description="Prepare training shards from a video manifest: decode, split at shot cuts, drop clips shorter "
                    "than a training section or outside the dynamism bounds, resize to a bucket, encode with the "
                    "datamodule's encoders, write shards + index.json + prepare_report.{json,md}. Resumable. "
                    "Importers: `lvg prepare import-mira META OUT --root DIR`, `lvg prepare import-sekai ...`.",
    )
    parser.add_argument("--config", action=ActionConfigFile,
                        help="A training YAML (its data: section is used; model, trainer, ... are ignored) or a "
                             "prepare YAML (configs/prepare/).")
    parser.add_subclass_arguments(LightningDataModule, "data", required=False,
                                  help="The datamodule whose encoders and shard_dir are used.")
    parser.add_argument("--manifest", type=str | None, default=None, help="The JSONL manifest to prepare.")
    parser.add_argument("--out", type=str | None, default=None, help="Shard directory (default: data.shard_dir).")
    parser.add_argument("--workers", type=int, default=0, help="Decoding processes (0: the main process).")
    parser.add_argument("--strict", action=ActionYesNo, default=False,
                        help="Stop at the first bad item (non-zero exit).")
    parser.add_argument("--validate_only", "--validate-only", action=ActionYesNo, default=False,
                        help="Only check the manifest: list every bad row (file:line, field; missing or empty "
                             "video files too).")
    parser.add_argument("--progress", action=ActionYesNo, default=True, help="Show a progress bar.")
    parser.add_argument("--format", type=Literal["safetensors", "litdata"], default="safetensors",
                        help="litdata: also convert the shards to litdata chunks in OUT/litdata.")
    parser.add_class_arguments(PrepareConfig, "prepare",
                               help="Filters and storage settings (defaults: the datamodule's prepare_settings()).")
    return parser


def _known_configs(argv: list[str], known: set[str]) -> list[str]:
    """``argv`` with each ``--config`` (and its ``base:`` files) narrowed to the keys ``lvg prepare``
    knows, so a training YAML (``model``, ``trainer``, ``seed_everything`` ...) can be passed as it is."""
    out, words, i = [], expand_configs(argv), 0
    while i < len(words):
        if words[i] == "--config":
            narrowed = {k: v for k, v in read_layer(words[i + 1]).items() if k in known}
            out += ["--config", yaml.safe_dump(narrowed, sort_keys=False) if narrowed else "{}"]
            i += 2
            continue
        out.append(words[i])
        i += 1
    return out


def _dotted(prefix: str, settings) -> dict[str, Any]:
    """A dataclass's fields as dotted keys (nested dataclasses flattened), for ``set_defaults``."""
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_dotted(f"{prefix}.{f.name}", value))
        else:
            out[f"{prefix}.{f.name}"] = value
    return out


def _import_main(kind: str, argv: list[str]) -> None:
    from lvg.data import importers

    parser = ArgumentParser(prog=f"lvg prepare import-{kind}",
                            description=f"Convert {kind.capitalize()} metadata into an lvg manifest (JSONL); see "
                                        "lvg.data.importers for the column mapping.")
    parser.add_argument("meta", type=str, help="Metadata file (.csv, .tsv, .json or .jsonl).")
    parser.add_argument("out", type=str, help="Manifest to write.")
    parser.add_argument("--root", type=str | None, default=None,
                        help="Directory the metadata's video paths are relative to (default: META's directory).")
    if kind == "mira":
        parser.add_argument("--caption", type=str, default="dense_caption",
                            help="Mira column used as the caption (dense_caption, short_caption, ...).")
    parser.add_argument("--strict", action=ActionYesNo, default=False,
                        help="Stop at the first row that cannot be imported.")
    cfg = parser.parse_args(argv)
    extra = {"caption": cfg.caption} if kind == "mira" else {}
    print(importers.IMPORTERS[kind](cfg.meta, cfg.out, root=cfg.root, strict=cfg.strict, **extra))


def prepare_main(argv: list[str]) -> None:
    """``lvg prepare ...``: videos -> latent shards (see :mod:`lvg.data.prepare`)."""
    from lvg.data.manifest import validate_manifest
    from lvg.data.prepare import REPORT, PrepareError, prepare_shards, resolve_config
    from lvg.models.encoders import encoders_of

    if argv[:1] in (["import-mira"], ["import-sekai"]):
        _import_main(argv[0].removeprefix("import-"), argv[1:])
        return
    parser = _prepare_parser()
    known = {action.dest.split(".")[0] for action in parser._actions} - {"help", "config"}
    words = _known_configs(argv, known)
    cfg = parser.parse_args(words)
    if cfg.manifest is None:
        raise PrepareError("pass --manifest (a JSONL manifest; see `lvg prepare --help`).")
    if cfg.validate_only:
        report = validate_manifest(cfg.manifest, check_files=True)
        print(report)
        if report.issues:
            raise PrepareError(f"{cfg.manifest}: {len(report.issues)} problems (listed above).")
        return
    if cfg.get("data") is None:
        raise PrepareError("pass --config <training.yaml> (its data: section names the encoders) "
                           "or --data.class_path ...")
    datamodule = instantiate(parser, cfg).data
    defaults = datamodule.prepare_settings() if hasattr(datamodule, "prepare_settings") else None
    if defaults is not None:  # the datamodule's own settings, under what the configs and flags say
        parser.set_defaults(_dotted("prepare", defaults))
        cfg = parser.parse_args(words)
    encoders = encoders_of(datamodule)
    if encoders is None:
        raise PrepareError(f"{type(datamodule).__name__} does not name its encoders (encoders() returned None); "
                           "use a datamodule that does (ToyWorldDataModule, FramePackF1DataModule, ...).")
    out = cfg.out or getattr(datamodule, "shard_dir", None)
    if out is None:
        raise PrepareError("pass --out (the datamodule has no shard_dir).")
    config = resolve_config(instantiate(parser, cfg).prepare, encoders, getattr(datamodule, "min_latent_frames", None))
    index = prepare_shards(cfg.manifest, out, encoders, config, workers=cfg.workers, strict=cfg.strict,
                           progress=cfg.progress, output_format=cfg.format)
    print(f"lvg prepare: {len(index['videos'])} clips in {out}, {len(index['skipped'])} items skipped; "
          f"report: {Path(out) / (REPORT + '.md')}", file=sys.stderr)


TOOLS = {"info": info_main, "prepare": prepare_main, "plan": plan_main, "compare": compare_main,
         "export-lora": export_lora_main, "strip": strip_main}
"""The subcommands that are not a Lightning run, by name."""
