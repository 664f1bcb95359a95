"""One command-line builder: config dataclasses ⇄ argparse arguments, and the options every training
command shares (``--data``, ``--category``, ``--name``, ``--state-dir``, ``--export-dir``, ``--device``).

    p = argparse.ArgumentParser()
    add_config_arguments(p, TrainConfig)           # --preset, --image-size, --steps, ...
    cfg = config_from_args(TrainConfig, p.parse_args())
    config_argv(cfg)                               # back to ["--steps", "3000", ...] (non-defaults)

A field ``int | None`` takes an int or ``none``; a ``bool`` field becomes ``--flag`` / ``--no-flag``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..core.paths import CHECKPOINTS, TRAIN_STATE
from .checkpoints import checkpoint_path

__all__ = ["add_config_arguments", "config_from_args", "config_argv", "add_training_arguments", "training_parser",
           "checkpoint_name", "command_line", "exit_on_error", "cli_main"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(cls: type, f: dataclasses.Field) -> tuple[type, bool]:
    """(the field's base type, whether it may be None) from its annotation."""
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{cls.__name__}.{f.name}: only X | None unions can become an argument, got {hint}")
        return rest[0], True
    return hint, False


def _parse(base: type, optional: bool, flag: str):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {base.__name__}"
                                             f"{' or none' if optional else ''}, got {text!r}") from None
    parse.__name__ = base.__name__
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = ()) -> None:
    """Add one ``--field-name`` option per field of the dataclass ``cls`` (its default as the default)."""
    doc = (cls.__doc__ or "").strip().splitlines()
    group = parser.add_argument_group(f"{cls.__name__}: {doc[0]}" if doc else cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        base, optional = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if base is bool:
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                               help="(default: %(default)s)")
        elif base in (int, float, str):
            group.add_argument(_flag(f.name), dest=f.name, type=_parse(base, optional, _flag(f.name)),
                               default=default, metavar=base.__name__.upper(),
                               help="(default: %(default)s)" + (", 'none' for None" if optional else ""))
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: a {base} field cannot become a command-line argument")


def config_from_args(cls: type, args: argparse.Namespace, *, exclude: Sequence[str] = (), **given: Any):
    """``cls`` built from the parsed options of :func:`add_config_arguments` (``given`` overrides)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in exclude}
    return cls(**{**values, **given})


def config_argv(cfg: Any, *, always: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """The options that rebuild ``cfg`` with :func:`add_config_arguments`: every field that differs from
    its default, and the fields in ``always``."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in exclude or (f.name not in always and value == f.default):
            continue
        if isinstance(value, bool):
            out.append(_flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        else:
            out += [_flag(f.name), "none" if value is None else str(value)]
    return out


def checkpoint_name(text: str) -> str:
    """argparse ``type`` of ``--name``: a plain file name (see :func:`lib.io.checkpoints.checkpoint_path`)."""
    try:
        checkpoint_path(".", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_training_arguments(parser: argparse.ArgumentParser, *, example: str, state: bool = True) -> None:
    """The options every training command has: data, category, checkpoint name, folders, device."""
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: the embedded benchmark)")
    parser.add_argument("--category", default="gravel")
    parser.add_argument("--name", required=True, type=checkpoint_name,
                        help=f"checkpoint name, a plain file name, e.g. {example}")
    if state:
        parser.add_argument("--state-dir", type=Path, default=TRAIN_STATE, help="where the resumable state goes")
    parser.add_argument("--export-dir", type=Path, default=CHECKPOINTS, help="where the exported weights go")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")


@contextlib.contextmanager
def exit_on_error(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Turn a ``ValueError`` / ``FileNotFoundError`` of the library into ``prog: error: ...`` and exit status 2
    (only a ``main()`` uses this; library functions raise)."""
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")


def training_parser(module: str, description: str, config_cls, *, example: str) -> argparse.ArgumentParser:
    """``python -m <module>``'s parser for a training command whose export may be float16: the common options
    (:func:`add_training_arguments`), ``--export-half`` and one option per field of ``config_cls``."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    add_training_arguments(p, example=example)
    p.add_argument("--export-half", action="store_true", help="store the exported EMA weights as float16")
    add_config_arguments(p, config_cls)
    return p


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command a manifest records: ``python -m <module> <argv>`` (``sys.argv`` when ``argv`` is None)."""
    return f"python -m {module} " + shlex.join(list(sys.argv[1:] if argv is None else argv))


def cli_main(module: str, parser: Callable[[], argparse.ArgumentParser], run: Callable[..., Any],
             argv: Sequence[str] | None) -> None:
    """A method's ``main()``: parse ``argv`` with ``parser()``, then ``run(args, command=...)`` (the command the
    manifests record); library errors become ``prog: error: ...`` and exit status 2."""
    p = parser()
    a = p.parse_args(argv)
    with exit_on_error(p):
        run(a, command=command_line(module, argv))
