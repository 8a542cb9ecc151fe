"""How a refused command is told: one line, the reason of the error that is not the parser's."""

from __future__ import annotations

import yaml


def chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from (or while handling), outermost first."""
    errors = [err]
    while (inner := errors[-1].__cause__ or errors[-1].__context__) is not None and inner not in errors:
        errors.append(inner)
    return errors


def raised_by_parser(err: BaseException) -> bool:
    """Whether ``err`` was raised inside jsonargparse or argparse (which wrap a constructor's error in
    messages that list every Union alternative and dump the whole parsed config) rather than by lvg,
    Lightning or torch."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in ("jsonargparse", "argparse")


def reason(err: BaseException) -> str:
    """The message, on one line, of the outermost error of a chain that jsonargparse did not raise.
    ValueErrors are lvg's (and Lightning's) refusals of user input; other types may be bugs, so their
    type is named."""
    own = next((e for e in chain(err) if not raised_by_parser(e)), err)
    message = " ".join(str(own).split())
    if isinstance(own, ValueError):
        return message
    if isinstance(own, yaml.YAMLError):
        return f"a --config file is not valid YAML: {message}"
    return f"{type(own).__name__}: {message} (rerun with --debug for the traceback)"
