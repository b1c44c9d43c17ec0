"""Command-line options declared once, parsed fast, typer when it matters.

typer gives runbox its --help, its error messages and its subcommands, but
importing it and letting it parse costs about 150 ms per start, longer than
the container takes.  So a stage declares its options with Option() and
Argument() from here, plain records, and a run with ordinary options is
parsed by fast_parse() below without importing typer at all.  Anything
else (--help, an unknown option, a missing value) goes to typer, built from
the very same declarations, so its help and its errors are the ones users
see: the fast path only ever accepts what typer would accept the same way.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One option (decls like "--memory", "-m") or the argument (none)."""

    default: object
    decls: tuple[str, ...]
    help: str = ""
    metavar: str | None = None

    def to_typer(self) -> Any:
        import typer

        if self.decls:
            return typer.Option(self.default, *self.decls, help=self.help)
        return typer.Argument(self.default, metavar=self.metavar,
                              help=self.help)


def Option(default: object, *decls: str, help: str = "") -> Any:  # noqa: N802
    """Like typer.Option, read by both parsers."""
    return Param(default, decls, help)


def Argument(default: object, *, metavar: str,  # noqa: N802
             help: str = "") -> Any:
    """Like typer.Argument: the command and its arguments."""
    return Param(default, (), help, metavar)


def _is_list(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith("list")
    return typing.get_origin(annotation) is list


def _params(func: Callable) -> dict[str, tuple[object, object]]:
    """name: (default, annotation) of func's parameters, read from its
    code object: inspect.signature would cost more than the rest."""
    code = func.__code__
    names = code.co_varnames[:code.co_argcount]
    defaults = func.__defaults__ or ()
    padded = (None,) * (len(names) - len(defaults)) + tuple(defaults)
    notes = func.__annotations__
    return {n: (d, notes.get(n)) for n, d in zip(names, padded)}


def fast_parse(func: Callable, argv: list[str]) -> dict | None:
    """func's keyword arguments from argv, or None to let typer decide.

    Options come first and stop at the first argument that is not one
    (or at "--"); the rest is the command.  Flags may be bundled (-it), a
    value may follow its option or be joined to it (--memory=64m, -m64m).
    """
    params = _params(func)
    kwargs: dict[str, Any] = {}
    flags: dict[str, tuple[str, Param, bool]] = {}
    argument = None
    for name, (param, annotation) in params.items():
        if not isinstance(param, Param):
            return None
        many = _is_list(annotation)
        kwargs[name] = [] if many and param.decls else param.default
        if not param.decls:
            argument = name
        for decl in param.decls:
            flags[decl] = (name, param, many)

    def take(decl: str, value: str | None, rest: list[str]) -> bool:
        name, param, many = flags[decl]
        if isinstance(param.default, bool):
            if value is not None:
                return False
            kwargs[name] = True
            return True
        if value is None:
            if not rest:
                return False
            value = rest.pop(0)
        if many:
            kwargs[name].append(value)
        else:
            kwargs[name] = value
        return True

    rest = list(argv)
    while rest:
        arg = rest[0]
        if arg == "--":
            rest.pop(0)
            break
        if not arg.startswith("-") or arg == "-":
            break
        rest.pop(0)
        if arg in ("-h", "--help"):
            return None
        if arg.startswith("--"):
            decl, eq, value = arg.partition("=")
            if decl not in flags or not take(decl, value if eq else None,
                                             rest):
                return None
            continue
        # Short options, bundled: every one but the last must be a flag;
        # a value may be joined to the last one that takes it.
        chars = arg[1:]
        for i, char in enumerate(chars):
            decl = f"-{char}"
            if decl not in flags:
                return None
            joined = chars[i + 1:]
            if isinstance(flags[decl][1].default, bool):
                take(decl, None, rest)
                continue
            if not take(decl, joined or None, rest):
                return None
            break
    for name, value in kwargs.items():
        if value == [] and name != argument:
            kwargs[name] = params[name][0].default
    if argument is not None:
        kwargs[argument] = rest or params[argument][0].default
    elif rest:
        return None
    return kwargs


def typer_command(func: Callable) -> Callable:
    """func with its Param defaults made typer's, for a Typer app."""
    import functools
    import inspect

    sig = inspect.signature(func)
    params = [p.replace(default=p.default.to_typer())
              if isinstance(p.default, Param) else p
              for p in sig.parameters.values()]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    command.__signature__ = sig.replace(parameters=params)  # type: ignore
    return command
