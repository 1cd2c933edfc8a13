"""The ``gradstop`` command: one module per command (``train``, ``health``: diagnose and check, ``sweep``: sweep
and figures, ``play``), joined here. Nothing in the library imports this package."""

from __future__ import annotations

import argparse
import sys

from gradstop.cli import health as health_cli, play as play_cli, sweep as sweep_cli, train as train_cli
from gradstop.cli.train import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = ["main"]

EPILOG = """\
examples:
  gradstop train --sim cartpole --flow none,input,combined --epochs 20 --out results/cp
  gradstop play results/cp --out cartpole.gif
  gradstop diagnose --sim cartpole --param poles=2 --horizon 150
  gradstop check --sim pointmass
  gradstop sweep grid.json

Run 'gradstop COMMAND --help' for a command's options and examples."""


def version() -> str:
    """The installed gradstop's version (the package metadata's, else ``gradstop.__version__``)."""
    from importlib import metadata

    try:
        return metadata.version("gradstop")
    except metadata.PackageNotFoundError:
        import gradstop

        return gradstop.__version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradstop", description="gradstop: train controllers through differentiable "
                                     "physics,\nwith control over how gradients flow (JAX and PyTorch)",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gradstop {version()}", help="print gradstop's version and exit")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    train_cli.add_parsers(sub)
    play_cli.add_parsers(sub)
    health_cli.add_parsers(sub)
    sweep_cli.add_parsers(sub)
    return parser


COMMANDS = {"train": train_cli.train, "play": play_cli.play, "diagnose": health_cli.diagnose, "check": health_cli.check,
            "sweep": sweep_cli.sweep, "figures": sweep_cli.figures}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.command is None:  # bare `gradstop`: what it can do
        parser.print_help()
        return EXIT_OK
    run = COMMANDS[ns.command]
    try:
        return run(ns)
    except (ValueError, TypeError, FileExistsError, ImportError, ConnectionError) as err:
        print(f"gradstop {ns.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as err:  # gradstop's out-of-memory message: the estimate and the fixes
        print(f"gradstop {ns.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # a results folder that cannot be written: read-only, full, under a file
        text = err.strerror or str(err)
        if err.filename and str(err.filename) not in text:
            text = f"{text}: {err.filename}"
        print(f"gradstop {ns.command}: error: {text}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        resumable = ns.command in ("train", "sweep", "figures")
        again = "; run the same command again to resume from the last checkpoint" if resumable else ""
        print(f"gradstop {ns.command}: interrupted{again}", file=sys.stderr)
        return EXIT_INTERRUPTED
