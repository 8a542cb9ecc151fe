"""Reading training YAMLs: ``base:`` composition, the run directory, and building a ``model:`` section.

Every ``lvg`` command that takes a training YAML (``fit`` ... ``generate``, ``prepare``, ``plan``) reads
it through :func:`expand_configs`, so a config means the same thing to all of them.

* ``base: other.yaml`` (or a list, relative to the file): applied first, exactly as if each were an
  earlier ``--config`` -- jsonargparse's own composition of several config files, so later values
  override, nested mappings merge and ``init_args`` survive a changed ``class_path``. The toy stages
  share ``configs/toy/recipe.yaml`` this way.
* ``trainer.default_root_dir`` names the run once (:func:`fill_run_directory`): a ModelCheckpoint
  without ``dirpath`` writes to ``<run>/checkpoints`` and, when no logger is configured, TensorBoard
  logs to ``<run>/tensorboard`` (a fixed directory, so a resumed run continues its curves).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace

BASE_KEY = "base"
"""Top-level key of a config file listing the configs it builds on."""


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path} is not valid YAML ({err}).") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path}: expected a mapping of options, got {type(loaded).__name__}.")
    return loaded


def config_layers(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[str | Path]:
    """What ``--config path`` stands for, earliest first: its bases (recursively), then the file itself
    -- as the path when it has no ``base:``, else as YAML text without that key."""
    path = Path(path)
    if not path.is_file():
        return [path]  # jsonargparse names the missing file (or parses the value as a YAML string)
    if path.resolve() in _seen:
        raise ValueError(f"--config {path}: its `{BASE_KEY}:` chain includes itself.")
    config = _load(path)
    if BASE_KEY not in config:
        return [path]
    bases = config.pop(BASE_KEY)
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"--config {path}: `{BASE_KEY}:` must be a config path or a list of them, got {bases!r}.")
    layers: list[str | Path] = []
    for base in bases:
        resolved = path.parent / base
        if not resolved.is_file():
            raise ValueError(f"--config {path}: its `{BASE_KEY}: {base}` ({resolved}) does not exist.")
        layers += config_layers(resolved, (*_seen, path.resolve()))
    return [*layers, yaml.safe_dump(config, sort_keys=False)]


def expand_configs(words: list[str]) -> list[str]:
    """Command-line ``words`` with every ``--config FILE`` replaced by its layers (``--config`` each)."""
    out, i = [], 0
    while i < len(words):
        word = words[i]
        if (word == "--config" and i + 1 < len(words)) or word.startswith("--config="):
            value = words[i + 1] if word == "--config" else word.split("=", 1)[1]
            i += 2 if word == "--config" else 1
            for layer in config_layers(value):
                out += ["--config", str(layer)]
            continue
        out.append(word)
        i += 1
    return out


def read_layer(value: str) -> dict[str, Any]:
    """One ``--config`` value of :func:`expand_configs` (a file or YAML text) as a mapping."""
    if Path(value).is_file():
        return _load(Path(value))
    loaded = yaml.safe_load(value)
    return loaded if isinstance(loaded, dict) else {}


def _subclass_of(class_path: Any, base: type) -> bool:
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False  # jsonargparse reports the bad class path itself
    return isinstance(cls, type) and issubclass(cls, base)


def fill_run_directory(trainer: Namespace) -> None:
    """Derive checkpoint and log directories from ``trainer.default_root_dir`` where they are not given."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    root = trainer.get("default_root_dir")
    if root is None:
        return
    callbacks = trainer.get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(callback, Namespace) and _subclass_of(callback.get("class_path"), ModelCheckpoint):
            if callback.get("init_args") is None:
                callback.init_args = Namespace()
            if callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(Path(root) / "checkpoints")
    if trainer.get("logger") in (None, True):
        trainer.logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                   init_args=Namespace(save_dir=str(root), name="tensorboard", version=""))


def instantiate(parser: ArgumentParser, cfg: Namespace) -> Namespace:
    """``parser.instantiate`` (jsonargparse >= 4.49) or its older name ``instantiate_classes``."""
    method = getattr(parser, "instantiate", None) or parser.instantiate_classes  # pyproject allows >= 4.39
    return method(cfg)


def build_model(model: dict[str, Any]):
    """Instantiate a ``model:`` section (class_path + init_args) without weights (``pretrained`` and
    ``init_from`` off); under ``FakeTensorMode`` or ``torch.device("meta")`` it costs no memory."""
    from lvg.training.base import StageModule

    init_args = {**(model.get("init_args") or {}), "pretrained": None, "init_from": None}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(StageModule, "model")
    cfg = parser.parse_object({"model": {"class_path": model["class_path"], "init_args": init_args}})
    return instantiate(parser, cfg).model


def check_memory_world_context(config: Namespace) -> None:
    """The memory world scripts its absences against the context of the model trained on it
    (``data...toy.context``); refuse a model whose window or history differ, naming both keys."""
    from lvg.data.datamodule import ToyWorldDataModule

    data, model = config.get("data"), config.get("model")
    if not (isinstance(data, Namespace) and isinstance(model, Namespace)
            and _subclass_of(data.get("class_path"), ToyWorldDataModule)):
        return
    toy, memory_pack = data.get("init_args.toy"), model.get("init_args.memory_pack")
    if toy is None or memory_pack is None or toy.get("world") != "memory":
        return
    context = (toy.get("context.window"), tuple(toy.get("context.history") or ()))
    packed = (memory_pack.get("window"), tuple(memory_pack.get("history_sizes") or ()))
    if None not in context and context[1] and packed[1] and context != packed:
        raise ValueError(
            f"data.init_args.toy.context (window {context[0]}, history {list(context[1])}) must match "
            f"model.init_args.memory_pack (window {packed[0]}, history_sizes {list(packed[1])}): the memory world "
            "times its absences against the model's context; set both to the same values.")
