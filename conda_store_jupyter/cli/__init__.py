"""``conda-store``: the command line client (and ``#!/usr/bin/env conda-store`` interpreter).

``main`` is the console-script entry point. It stays cheap: it handles the shebang form, runs
the click group and turns every expected failure into one line on stderr and an exit code. A
``Traceback`` is only shown with ``CONDA_STORE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

COMMANDS = frozenset({"info", "token", "list", "download", "wait", "solve", "run", "env", "logs"})


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"conda-store: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return code


def _run_cached(args: list[str]) -> None:
    """``[global options] run URI [--] CMD...`` of a cached build: exec it without click.

    click costs ~30 ms to import, a fifth of the budget of a cached run. Only the plain form is
    handled here; anything else (``--help``, run options, an uncached build, basic auth)
    returns and goes through the full CLI, which gives the same results, just slower.
    """
    url = auth = None
    no_verify = False
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, value = args[i].partition("=")
        if name == "--no-verify-ssl" and not eq:
            no_verify, i = True, i + 1
        elif name in ("--conda-store-url", "--auth"):
            if not eq:
                if i + 1 >= len(args):
                    return
                value, i = args[i + 1], i + 1
            url, auth = (value, auth) if name == "--conda-store-url" else (url, value)
            i += 1
        else:
            return
    if args[i : i + 1] != ["run"] or len(args) < i + 2 or args[i + 1].startswith("-"):
        return
    uri, command = args[i + 1], args[i + 2 :]
    if command[:1] == ["--"]:
        command = command[1:]
    from . import _run
    from ._config import resolve_config
    from ._light import resolve_light
    from ._uri import parse_uri

    config = resolve_config(url, auth, no_verify)
    ref = parse_uri(uri)
    resolved = resolve_light(config, ref)
    if resolved is None:
        return
    build_id, identity = resolved
    prefix = _run.find_cached(config.cache_key, build_id, identity=identity)
    if prefix is not None:
        _run.exec_in_env(prefix, command or ["python"], name=str(ref))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from ._errors import CLIError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from ._shebang import shebang_argv

        rewritten = shebang_argv(args, COMMANDS)
        if rewritten is not None:
            args = rewritten
        _run_cached(args)  # returns only if the build is not cached (or the form is unusual)
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
