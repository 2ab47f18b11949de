"""``conda-store env create|update`` and ``conda-store logs``: building, the way conda/pixi users expect.

``env create -f environment.yaml`` submits the file and follows the build live (its log on
stdout, as ``conda env create`` prints its progress), ending with exit 0 when the build is
COMPLETED and 1 with the cause when it FAILED. A conda-lock file (recognised by its content) is
submitted as a lockfile specification: installed exactly as locked, without solving.
``logs BUILD [--follow]`` prints a build's log, or follows it live until the build ends.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._errors import CLIError
from ._state import CONTEXT, State, pass_state
from ._uri import parse_uri

if TYPE_CHECKING:
    from ._client import Client

FINAL = ("COMPLETED", "FAILED", "CANCELED")

SETTLE_SECONDS = 10.0
"""How long to wait for the build row to show the final state once its log has ended (the log's
end marker is written after the final commit, so normally no wait at all)."""


@click.group(context_settings=CONTEXT)
def env() -> None:
    """Create or update an environment from an environment.yaml (or a conda-lock file) and follow its build."""


def _name_option(f):
    return click.option("-n", "--name", "target", metavar="[NAMESPACE/]NAME",
                        help="Environment to create/update (default: the file's 'name:' in your primary namespace).")(f)


def _file_option(f):
    return click.option("-f", "--file", "file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                        help="The environment.yaml to build, or a conda-lock file to install exactly (no solve).")(f)


def _follow_option(f):
    return click.option("--no-follow", is_flag=True,
                        help="Only submit; print the build id and return without following the build.")(f)


@env.command("create", context_settings=CONTEXT)
@_file_option
@_name_option
@_follow_option
@pass_state
def env_create(state: State, file: Path, target: str | None, no_follow: bool) -> None:
    """Create a new environment from FILE and follow its first build (exit 1 if it fails)."""
    _submit(state, file, target, create=True, follow=not no_follow)


@env.command("update", context_settings=CONTEXT)
@_file_option
@_name_option
@_follow_option
@pass_state
def env_update(state: State, file: Path, target: str | None, no_follow: bool) -> None:
    """Build a new version of an existing environment from FILE and follow it (exit 1 if it fails)."""
    _submit(state, file, target, create=False, follow=not no_follow)


def is_lockfile(doc: object) -> bool:
    """Does the parsed file look like a conda-lock file (``version``, ``metadata``, ``package``)?

    Detected by content, not by file name: lockfiles are called conda-lock.yml, build-3.lock,
    anything. The server validates it fully.
    """
    return isinstance(doc, dict) and {"version", "metadata", "package"} <= set(doc) and "dependencies" not in doc


def _read(file: Path) -> tuple[str, str | None, bool]:
    """The file's text, its ``name:`` and whether it is a lockfile (validation is the server's
    job: it says exactly what is wrong)."""
    import yaml

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CLIError(f"{file} is not UTF-8 text") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CLIError(f"{file} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise CLIError(f"{file} is not an environment.yaml (expected a mapping with 'dependencies') "
                       "nor a conda-lock file")
    if is_lockfile(doc):
        return text, None, True
    name = doc.get("name")
    return text, name if isinstance(name, str) and name else None, False


def _target(target: str | None, file_name: str | None, file: Path, lockfile: bool = False) -> tuple[str | None, str]:
    """``(namespace or None for the caller's primary one, environment name)``."""
    namespace, name = None, file_name
    if target:
        namespace, sep, rest = target.rpartition("/")
        namespace, name = (namespace or None, rest) if sep else (None, target)
        if sep and (not namespace or not rest or "/" in namespace):
            raise CLIError(f"invalid --name {target!r}: use NAME or NAMESPACE/NAME")
    if not name and lockfile:
        raise CLIError(f"{file} is a lockfile, which does not name its environment; name it with -n [NAMESPACE/]NAME")
    if not name:
        raise CLIError(f"{file} has no 'name:'; name the environment with -n [NAMESPACE/]NAME")
    return namespace, name


def _submit(state: State, file: Path, target: str | None, *, create: bool, follow: bool) -> None:
    text, file_name, lockfile = _read(file)
    namespace, name = _target(target, file_name, file, lockfile)
    with state.client() as client:
        if namespace is None:
            namespace = client.permissions().get("primary_namespace") or "default"
        full = f"{namespace}/{name}"
        exists = client.find_environment(namespace, name) is not None
        if create and exists:
            raise CLIError(f"environment {full} already exists; to build a new version of it: "
                           f"conda-store env update -f {file} -n {full}")
        if not create and not exists:
            raise CLIError(f"environment {full} does not exist; to create it: conda-store env create -f {file} -n {full}")
        build_id = client.submit(text, namespace=namespace, environment_name=name, is_lockfile=lockfile)
        click.echo(f"{full}: build {build_id} submitted" + (" (a lockfile: installed as locked, no solve)"
                                                           if lockfile else ""))
        if not follow:
            return
        build = follow_build(client, build_id)
    status = build.get("status")
    if status == "COMPLETED":
        click.echo(f"{full}: build {build_id} COMPLETED")
        return
    raise failure(build_id, build, full)


POLL_SECONDS = 2.0
"""Seconds between status checks on a server without a live log stream (upstream conda-store)."""


def follow_build(client: "Client", build_id: int) -> dict[str, Any]:
    """Print the build's log live on stdout until it ends; return the final build.

    Interrupting stops following, not the build: the message says how to pick it up again.
    """
    from ._follow import NoLiveLog

    try:
        try:
            for line in client.follow_log(build_id):
                if line.text is not None:
                    click.echo(line.text)
            settle = time.monotonic() + SETTLE_SECONDS
        except NoLiveLog:  # a server without the stream: follow the status instead
            settle = float("inf")
        build = client.build(build_id)
        while build.get("status") not in FINAL and time.monotonic() < settle:
            time.sleep(0.2 if settle != float("inf") else POLL_SECONDS)
            build = client.build(build_id)
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; build {build_id} goes on on the server "
                       f"(follow it again: conda-store logs {build_id} --follow)", exit_code=130) from None
    return build


def failure(build_id: int, build: dict[str, Any], what: str | None = None) -> CLIError:
    """The one-line error for a build that did not complete: its state, cause and how to read its log."""
    status = build.get("status")
    why = f": {build['status_info']}" if build.get("status_info") else ""
    of = f" of {what}" if what else ""
    return CLIError(f"build {build_id}{of} {status}{why} (its log: conda-store logs {build_id})")


@click.command(context_settings=CONTEXT)
@click.argument("uri")
@click.option("-f", "--follow", is_flag=True, help="Follow the live log until the build ends.")
@pass_state
def logs(state: State, uri: str, follow: bool) -> None:
    """Print the log of a build (URI: <build_id>, <namespace>/<environment> for its newest build,
    or <namespace>/<environment>:<build_id>)."""
    ref = parse_uri(uri)
    with state.client() as client:
        build_id = client.resolve(ref, newest=True)
        if follow:
            for line in client.follow_log(build_id):
                if line.text is not None:
                    click.echo(line.text)
            return
        # The LOGS artifact may live in object storage (a redirect): reuse the download path.
        with tempfile.TemporaryDirectory(prefix="conda-store-logs-") as tmp:
            result = client.download(build_id, "logs", Path(tmp) / "build.log")
            with open(result.path, "rb") as fh:
                sys.stdout.flush()
                sys.stdout.buffer.write(fh.read())
                sys.stdout.flush()
