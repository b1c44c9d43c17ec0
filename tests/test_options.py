"""The fast parser accepts only what typer accepts, and reads it the same."""

import itertools

import pytest

from runbox import cli, options


def sample(
    command: list[str] = cli.COMMAND,
    rootfs: str = cli.Option(None, "--rootfs"),
    env: list[str] = cli.Option(None, "--env", "-e"),
    memory: str = cli.Option(None, "--memory", "-m"),
    terminal: bool = cli.Option(False, "--tty", "-t"),
    interactive: bool = cli.Option(False, "--interactive", "-i"),
    quiet: bool = cli.QUIET,
) -> int:
    return 0


def by_typer(argv):
    """What typer hands the function for argv, or the error it raises."""
    import typer

    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        return 0

    record.__signature__ = options.typer_command(sample).__signature__
    app = typer.Typer(add_completion=False, context_settings=cli.CONTEXT)
    app.command()(record)
    try:
        app(args=argv, standalone_mode=False)
    except typer.TyperException:
        return None
    return seen


PIECES = [["--rootfs", "x"], ["--rootfs=y"], ["-e", "A=1"], ["-eB=2"],
          ["--env", "C"], ["-m", "64m"], ["-m32m"], ["--memory=1g"], ["-t"],
          ["-it"], ["-ti"], ["-q"], ["--quiet"], ["-te", "D=4"], ["--"]]
COMMANDS = [["sh", "-c", "echo hi"], ["ls", "-la", "--", "-x"], [],
            ["sh", "--help"]]


@pytest.mark.parametrize("argv", [
    list(itertools.chain(*combo)) + command
    for n in (0, 1, 2)
    for combo in itertools.permutations(PIECES, n)
    for command in COMMANDS
][::7])
def test_fast_parse_agrees_with_typer(argv):
    fast = options.fast_parse(sample, argv)
    slow = by_typer(argv)
    if fast is not None:
        assert slow is not None, argv
        normal = {k: (v or None) if isinstance(v, list) else v
                  for k, v in slow.items()}
        assert fast == normal, argv


@pytest.mark.parametrize("argv", [
    ["--help"], ["-h", "sh"], ["--bogus", "sh"], ["--rootfs"], ["-x"],
    ["--tty=yes", "sh"],
])
def test_anything_unusual_goes_to_typer(argv):
    assert options.fast_parse(sample, argv) is None
