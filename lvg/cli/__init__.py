"""The ``lvg`` command: one dispatch for every subcommand.

``fit | validate | test | predict | generate`` are a Lightning run (:mod:`lvg.cli.lightning`);
``info | prepare | plan | compare | export-lora | strip`` are tools (:mod:`lvg.cli.tools`). Both read
training YAMLs the same way (:mod:`lvg.cli.configs`: ``base:`` composition, the run directory) and
tell a refused command as one ``lvg: error:`` line (:mod:`lvg.cli.errors`).
"""

from __future__ import annotations

import difflib
import os
import sys

from lvg import __version__
from lvg.cli.errors import reason
from lvg.cli.lightning import ConfigError, LvgCLI, LvgTrainer
from lvg.cli.tools import TOOLS, export_lora_main, model_info

DEBUG_ENV = "LVG_DEBUG"
"""Set to 1 (or pass ``--debug``) to see the full traceback of a refused command, e.g. for a bug report."""
BARE_FLAGS = ("--overwrite",)
"""Boolean options that may be given without a value (``--overwrite`` = ``--overwrite true``)."""


def main(argv: list[str] | None = None) -> None:
    """Entry point; ``argv`` defaults to the command line. ``--debug`` (anywhere) or ``LVG_DEBUG=1``
    shows the traceback of a refused command instead of its one ``lvg: error:`` line."""
    words = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in words or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    words = [w for w in words if w != "--debug"]
    # jsonargparse wants a value for booleans (`--overwrite true`); a bare flag means true, as in every CLI
    words = [f"{w}=true" if w in BARE_FLAGS and (i + 1 == len(words) or words[i + 1].startswith("-")) else w
             for i, w in enumerate(words)]
    tool = words[0] if words[:1] and words[0] in TOOLS else None
    try:
        commands = [*LvgCLI.subcommands(), *TOOLS]
        if words[:1] and not words[0].startswith("-") and words[0] not in commands:
            near = difflib.get_close_matches(words[0], commands, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ValueError(f"no command {words[0]!r}; {hint}the commands are {', '.join(commands)}.")
        if tool is not None:
            TOOLS[tool](words[1:])
        elif words[:1] == ["--version"]:
            print(f"lvg {__version__}")
        else:
            LvgCLI(args=words)
    except ValueError as err:  # user mistakes (configs, bad files, inputs, checkpoints): the message, no traceback
        if debug:
            raise
        sys.exit(f"lvg{' ' + tool if tool else ''}: error: {reason(err)}")


__all__ = ["BARE_FLAGS", "DEBUG_ENV", "ConfigError", "LvgCLI", "LvgTrainer", "export_lora_main", "main", "model_info"]
