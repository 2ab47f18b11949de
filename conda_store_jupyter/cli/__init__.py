"""``conda-store``: the command line client (and ``#!/usr/bin/env conda-store`` interpreter).

``main`` is the console-script entry point. It stays cheap: it handles the shebang form, runs
the click group and turns every expected failure into one line on stderr and an exit code. A
``Traceback`` is only shown with ``CONDA_STORE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

COMMANDS = frozenset({"info", "token", "list", "download", "wait", "solve", "run"})


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"conda-store: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from ._errors import CLIError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from ._shebang import shebang_argv

        rewritten = shebang_argv(args, COMMANDS)
        if rewritten is not None:
            args = rewritten
        import click

        from .commands import cli

        try:
            result = cli.main(args=args, prog_name="conda-store", standalone_mode=False)
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except click.exceptions.Abort:
            return _fail("aborted", 130)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "conda-store"
            return _fail(f"{exc.format_message()} (see '{command} --help')", exc.exit_code)
        except click.ClickException as exc:
            return _fail(exc.format_message(), exc.exit_code)
        return result if isinstance(result, int) else 0
    except CLIError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 141
    except Exception as exc:  # a bug: still one line unless debugging
        if os.environ.get("CONDA_STORE_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (set CONDA_STORE_DEBUG=1 for the traceback)", 1)
