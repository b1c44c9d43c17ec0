"""The `runbox` command: the final stage, with docker's manners.

    runbox run [OPTIONS] CMD [ARG...]   a container of stage 05
    runbox import TARBALL NAME          a rootfs tarball as an image
    runbox images                       the images there are
    runbox gc                           what dead runboxes left behind
    runbox doctor                       can this machine run the stages?

`runbox run` is stages/05_security itself, loaded from the repository:
quiet unless --trace, stdin only with -i.  It needs the repository it was
installed from (the Makefile installs it editable); a copy of the package
alone has no stages to run, and says so.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from runbox import cli, container, images, options
from runbox.errors import RunboxError

STAGE = Path(__file__).resolve().parent.parent / "stages/05_security"
HELP = "A container runtime written from scratch, taught in stages."


def final_stage() -> ModuleType:
    """stages/05_security/__main__.py, loaded as a module."""
    path = STAGE / "__main__.py"
    if not path.is_file():
        raise RunboxError(f"{path} is missing: runbox runs from its "
                          "repository (make venv installs it so)")
    spec = importlib.util.spec_from_file_location("runbox_stage5", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.AS_RUNBOX = True
    return module


def import_(tarball: Path, name: str,
            force: bool = cli.Option(False, "--force",
                                     help="Replace an image of that name."),
            ) -> int:
    """Import a rootfs tarball (a docker export, an Alpine minirootfs)."""
    print(images.import_tarball(tarball, name, force=force))
    return 0


def images_() -> int:
    """List the images."""
    for name, path in images.list_images():
        print(f"{name}\t{path}")
    return 0


def gc() -> int:
    """Remove what dead runboxes left: their containers' cgroups,
    processes and directories, and their half-made images."""
    return container.main(["gc"])


def doctor_() -> int:
    """Check that this machine can run every stage; exit 1 if not."""
    from runbox import doctor

    return doctor.main()


def typer_app(stage: ModuleType) -> Any:
    """The whole command as a Typer app: for help, errors and the rest."""
    import typer

    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      pretty_exceptions_enable=False, help=HELP,
                      context_settings={
                          "help_option_names": ["-h", "--help"]})
    app.command("run", context_settings=cli.CONTEXT,
                help="Run a command in a new container.")(
        options.typer_command(stage.main))
    app.command("import")(options.typer_command(import_))
    app.command("images")(images_)
    app.command("gc")(gc)
    app.command("doctor")(doctor_)
    return app


def main(argv: list[str] | None = None) -> None:
    """The console script.  `runbox run` with ordinary options is parsed
    without typer, which would take longer than the container."""
    args = sys.argv[1:] if argv is None else argv
    try:
        stage = final_stage()
    except RunboxError as exc:
        print(f"runbox: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if args[:1] == ["run"]:
        kwargs = options.fast_parse(stage.main, args[1:])
        if kwargs is not None:
            sys.exit(cli.call(stage.main, kwargs))
    sys.exit(cli.run_typer(typer_app(stage), args))


if __name__ == "__main__":
    main()
