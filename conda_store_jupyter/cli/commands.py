"""The click command tree: ``conda-store [global options] COMMAND``.

Import cost matters: this module imports click and the light helpers only. httpx and rich come
in through ``_client``/``_ui`` inside the commands that need them, so a cached
``conda-store run`` never loads them.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import __version__
from ._build_commands import env, logs
from ._config import AUTH_CHOICES
from ._errors import CLIError
from ._state import CONTEXT, State, output_option, pass_state
from ._uri import parse_uri

if TYPE_CHECKING:
    from ._client import Client

ARTIFACTS = ("lockfile", "yaml", "archive", "logs")
STATUSES = ("QUEUED", "BUILDING", "COMPLETED", "FAILED", "CANCELED")
ARTIFACT_TYPES = ("DIRECTORY", "LOCKFILE", "LOGS", "YAML", "CONDA_PACK", "DOCKER_MANIFEST", "DOCKER_BLOB")


@click.group(context_settings=CONTEXT)
@click.option("--conda-store-url", metavar="URL", help="Server URL incl. any prefix [env: CONDA_STORE_URL; in JupyterHub: discovered].")
@click.option("--auth", type=click.Choice(AUTH_CHOICES), help="Auth method [env: CONDA_STORE_AUTH; default: from the available credentials].")
@click.option("--no-verify-ssl", is_flag=True, help="Do not verify TLS certificates [env: CONDA_STORE_NO_VERIFY].")
@click.version_option(__version__, "--version", prog_name="conda-store")
@click.pass_context
def cli(ctx: click.Context, conda_store_url: str | None, auth: str | None, no_verify_ssl: bool) -> None:
    """Use conda-store environments from the command line.

    Credentials come from CONDA_STORE_TOKEN, or CONDA_STORE_USERNAME/CONDA_STORE_PASSWORD, or
    (inside JupyterHub) JUPYTERHUB_API_TOKEN. Build URIs are <build_id>, <namespace>/<environment>
    or <namespace>/<environment>:<build_id>.
    """
    ctx.obj = State(conda_store_url, auth, no_verify_ssl)


# --------------------------------------------------------------------------- info / token


@cli.command(context_settings=CONTEXT)
@pass_state
def info(state: State) -> None:
    """Show who you are on the server: authentication, primary namespace, permissions."""
    from . import _ui

    cfg = state.config
    with state.client() as client:
        perms = client.permissions()
    _ui.stdout.print(f"[bold]conda-store[/bold] {cfg.url}  [dim](URL from {cfg.url_source}, credentials from {cfg.auth_source})[/dim]")
    _ui.stdout.print(f"authenticated: {'yes' if perms.get('authenticated') else 'no'}")
    _ui.stdout.print(f"primary namespace: {perms.get('primary_namespace')}")
    if perms.get("expiration"):
        _ui.stdout.print(f"expires: {perms['expiration']}")
    permissions: dict[str, list[str]] = perms.get("entity_permissions") or {}
    roles: dict[str, list[str]] = perms.get("entity_roles") or {}
    rows = []
    for arn in sorted(set(permissions) | set(roles)):
        namespace, _, name = arn.partition("/")
        rows.append((namespace, name or "*", ", ".join(sorted(roles.get(arn, []))), ", ".join(sorted(permissions.get(arn, [])))))
    _ui.print_table("Permissions", ("Namespace", "Environment", "Roles", "Permissions"), rows)


_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``3600``, ``90m``, ``12h``, ``7d``, ``2w`` → timedelta (must be positive)."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise CLIError(f"invalid --expiration {text!r}: use seconds or a number with s/m/h/d/w (e.g. 12h, 7d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_role_binding(text: str) -> tuple[str, list[str]]:
    """``ns/env=role[,role]`` (globs allowed in the ARN) → (arn, roles)."""
    arn, sep, roles = text.partition("=")
    arn = arn.strip()
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    if not sep or arn.count("/") != 1 or not all(arn.split("/")) or not role_list:
        raise CLIError(f"invalid --role-binding {text!r}: use <namespace>/<environment>=<role>[,<role>] (globs allowed, e.g. 'alice/*=viewer')")
    return arn, role_list


@cli.command(context_settings=CONTEXT)
@click.option("--namespace", help="Primary namespace of the new token (default: yours).")
@click.option("--role-binding", "role_bindings", multiple=True, metavar="NS/ENV=ROLE[,ROLE]",
              help="Grant roles on an ARN glob; repeatable. Must be within your own permissions. Default: all of yours.")
@click.option("--expiration", metavar="DURATION", help="Lifetime: seconds or 30m/12h/7d (default: as long as yours).")
@pass_state
def token(state: State, namespace: str | None, role_bindings: tuple[str, ...], expiration: str | None) -> None:
    """Issue a new, narrower API token and print it."""
    body: dict[str, Any] = {}
    if namespace:
        body["primary_namespace"] = namespace
    if role_bindings:
        merged: dict[str, list[str]] = {}
        for text in role_bindings:
            arn, roles = parse_role_binding(text)
            merged.setdefault(arn, []).extend(r for r in roles if r not in merged.get(arn, []))
        body["role_bindings"] = merged
    if expiration:
        when = datetime.now(timezone.utc) + parse_duration(expiration)
        body["expiration"] = when.replace(tzinfo=None).isoformat()  # naive UTC, like the server
    with state.client() as client:
        click.echo(client.create_token(body))


# --------------------------------------------------------------------------- list


@cli.group("list", context_settings=CONTEXT)
def list_() -> None:
    """List namespaces, environments or builds (all pages)."""


@list_.command("namespace", context_settings=CONTEXT)
@output_option
@pass_state
def list_namespace(state: State, output: str) -> None:
    """List the namespaces you can see."""
    from . import _ui

    with state.client() as client:
        items = client.namespaces()
    if output == "json":
        return _ui.print_json(items)
    _ui.print_table("Namespaces", ("ID", "Name"), [(n.get("id"), n.get("name")) for n in items])


def _filters(status: str | None, artifact: str | None, packages: tuple[str, ...]) -> dict[str, Any]:
    return {"status": status, "artifact": artifact, "packages": list(packages)}


@list_.command("environment", context_settings=CONTEXT)
@click.option("--namespace", help="Only this namespace.")
@click.option("--name", help="Only environments with this name.")
@click.option("--search", help="Substring of namespace or name.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="Status of the current build.")
@click.option("--artifact", type=click.Choice(ARTIFACT_TYPES, case_sensitive=False), help="Current build has this artifact.")
@click.option("--package", "packages", multiple=True, help="Current build contains this package; repeatable.")
@output_option
@pass_state
def list_environment(state: State, namespace, name, search, status, artifact, packages, output: str) -> None:
    """List environments and their current builds."""
    from . import _ui

    with state.client() as client:
        items = client.environments(
            namespace=namespace, name=name, search=search,
            **_filters(status and status.upper(), artifact and artifact.upper(), packages),
        )
    if output == "json":
        return _ui.print_json(items)
    rows = [
        (e.get("id"), (e.get("namespace") or {}).get("name"), e.get("name"), e.get("current_build_id"), e.get("description"))
        for e in items
    ]
    _ui.print_table("Environments", ("ID", "Namespace", "Name", "Current build", "Description"), rows)


@list_.command("build", context_settings=CONTEXT)
@click.option("--namespace", help="Only builds of environments in this namespace.")
@click.option("--name", help="Only builds of environments with this name.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False))
@click.option("--artifact", type=click.Choice(ARTIFACT_TYPES, case_sensitive=False), help="Builds that have this artifact.")
@click.option("--package", "packages", multiple=True, help="Builds containing this package; repeatable.")
@output_option
@pass_state
def list_build(state: State, namespace, name, status, artifact, packages, output: str) -> None:
    """List builds (newest last)."""
    from . import _ui

    with state.client() as client:
        items = client.builds(
            namespace=namespace, name=name, **_filters(status and status.upper(), artifact and artifact.upper(), packages)
        )
        if output == "json":
            return _ui.print_json(items)
        try:  # builds only carry environment_id; show ns/name when we can see them
            envs = {e["id"]: f"{(e.get('namespace') or {}).get('name')}/{e.get('name')}" for e in client.environments()}
        except CLIError:
            envs = {}
    rows = [
        (b.get("id"), envs.get(b.get("environment_id"), b.get("environment_id")), b.get("status"),
         _ui.short_time(b.get("scheduled_on")), _ui.short_time(b.get("ended_on")), _ui.human_size(b.get("size")))
        for b in items
    ]
    _ui.print_table("Builds", ("ID", "Environment", "Status", "Scheduled (UTC)", "Ended (UTC)", "Size"), rows)


# --------------------------------------------------------------------------- download / wait


_DEFAULT_NAMES = {"lockfile": "build-{id}.conda-lock.yml", "yaml": "build-{id}.yaml", "archive": "build-{id}.tar.gz", "logs": "build-{id}.log"}


@cli.command(context_settings=CONTEXT)
@click.argument("uri")
@click.option("--artifact", type=click.Choice(ARTIFACTS), default="lockfile", show_default=True)
@click.option("--output-filename", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: build-<id>.<ext> in the current directory).")
@pass_state
def download(state: State, uri: str, artifact: str, output_filename: Path | None) -> None:
    """Download an artifact of a build: lockfile, pinned yaml, conda-pack archive or logs."""
    from . import _ui

    ref = parse_uri(uri)
    with state.client() as client:
        build_id = client.resolve(ref)
        dest = (output_filename or Path(_DEFAULT_NAMES[artifact].format(id=build_id))).absolute()
        if not dest.parent.is_dir():
            raise CLIError(f"cannot write {dest}: directory {dest.parent} does not exist")
        download_when_ready(client, build_id, artifact, dest, f"build {build_id} {artifact}")
    click.echo(str(dest))


@cli.command(context_settings=CONTEXT)
@click.argument("uri")
@click.option("--artifact", type=click.Choice(("build", *ARTIFACTS, "image")), default="build", show_default=True,
              help="Also wait until this artifact exists (image: the build's container image).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True, help="Seconds before giving up.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=2, show_default=True, help="Seconds between polls.")
@pass_state
def wait(state: State, uri: str, artifact: str, timeout: float, interval: float) -> None:
    """Wait until a build is COMPLETED (exit 1 if FAILED/CANCELED, 124 on timeout).

    For <namespace>/<environment> this is the environment's newest build (the one a just
    submitted specification started), not necessarily its current one.
    """
    from . import _ui
    from ._build_commands import failure
    from ._client import ARTIFACT_TYPES as TYPES
    from ._follow import READ_TIMEOUT, NoLiveLog, step_of

    ref = parse_uri(uri)
    deadline = time.monotonic() + timeout

    def timed_out(status: str | None, waiting_for: str = "") -> CLIError:
        return CLIError(f"timed out after {timeout:g}s waiting for build {build_id} (last status {status}{waiting_for})",
                        exit_code=124)

    with state.client() as client:
        build_id = client.resolve(ref, newest=True)
        with _ui.status_progress(f"build {build_id}: waiting") as set_status:
            build = client.build(build_id)
            if build.get("status") in ("QUEUED", "BUILDING"):
                # Follow the live log, showing the step the build is in (its last "-- <step>" line).
                set_status(f"build {build_id}: {build.get('status')}")
                remaining = max(1.0, deadline - time.monotonic())
                try:
                    for line in client.follow_log(build_id, read_timeout=min(READ_TIMEOUT, remaining)):
                        step = step_of(line.text) if line.text else None
                        if step:
                            set_status(f"build {build_id}: BUILDING, {step}")
                        if time.monotonic() > deadline:
                            raise timed_out(client.build(build_id).get("status"))
                except NoLiveLog:
                    pass  # a server without the live log (upstream conda-store): poll the status below
            while True:
                build = client.build(build_id)
                status = build.get("status")
                have = {a.get("artifact_type") for a in build.get("build_artifacts") or []}
                if status in ("FAILED", "CANCELED"):
                    raise failure(build_id, build)
                if status == "COMPLETED" and (artifact == "build" or TYPES[artifact] in have):
                    break
                state = artifact_state(build, TYPES[artifact]) if artifact != "build" else None
                if status == "COMPLETED" and state is not None and state[0] == "FAILED":
                    raise artifact_failure(build_id, artifact, state[1])
                waiting_for = "" if status != "COMPLETED" else f", waiting for its {artifact}"
                set_status(f"build {build_id}: {status}{waiting_for}")
                if time.monotonic() + interval > deadline:
                    raise timed_out(status, waiting_for)
                time.sleep(interval)
    click.echo(f"build {build_id} COMPLETED" + ("" if artifact == "build" else f" ({artifact} available)"))


# --------------------------------------------------------------------------- env / logs

cli.add_command(env)
cli.add_command(logs)


# --------------------------------------------------------------------------- solve


def _read_specification(path: Path) -> tuple[list[str], list[str], list[str]]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CLIError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise CLIError(f"{path} is not an environment.yaml (expected a mapping with 'dependencies')")
    channels = [str(c) for c in doc.get("channels") or []]
    conda: list[str] = []
    pip: list[str] = []
    for dep in doc.get("dependencies") or []:
        if isinstance(dep, str):
            conda.append(dep)
        elif isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            pip.extend(str(p) for p in dep["pip"])
        else:
            raise CLIError(f"{path}: unsupported dependency entry {dep!r}")
    if not conda and not pip:
        raise CLIError(f"{path} has no dependencies to solve")
    return channels, conda, pip


@cli.command(context_settings=CONTEXT)
@click.argument("specification", type=click.Path(dir_okay=False, path_type=Path))
@output_option
@pass_state
def solve(state: State, specification: Path, output: str) -> None:
    """Solve an environment.yaml on the server and print the packages it would install."""
    from . import _ui

    channels, conda, pip = _read_specification(specification)
    with state.client() as client:
        with _ui.status_progress(f"solving {specification.name} on {state.config.url}"):
            packages = client.solve(channels, conda, pip)
    if output == "json":
        return _ui.print_json(packages)
    rows = sorted(
        ((p.get("name"), p.get("version"), p.get("build", ""), p.get("channel") or p.get("channel_id"), _ui.human_size(p.get("size")))
         for p in packages),
        key=lambda r: str(r[0]),
    )
    _ui.print_table(f"{len(rows)} packages", ("Name", "Version", "Build", "Channel", "Size"), rows)


# --------------------------------------------------------------------------- run


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--artifact", type=click.Choice(("archive",)), default="archive", hidden=True,
              help="Accepted for compatibility; environments are always fetched as conda-pack archives.")
@click.argument("uri")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_state
def run(state: State, artifact: str, uri: str, command: tuple[str, ...]) -> None:
    """Run COMMAND (default: python) inside a build's environment.

    The build's conda-pack archive is downloaded once into ~/.cache/conda-store (or
    $XDG_CACHE_HOME), unpacked safely and reused; the command replaces this process, so its
    input, output and exit code are its own. Example: conda-store run alice/ml -- python -c 'print(1)'
    """
    from . import _run

    if command[:1] == ("--",):  # click keeps the separator once positional parsing has stopped
        command = command[1:]
    ref = parse_uri(uri)
    # A cached build was already exec'd by main()'s fast path; _install resolves the build once,
    # checks the cache again (another process may have filled it) and downloads otherwise.
    prefix = _install(state, ref, None)
    _run.exec_in_env(prefix, list(command) or ["python"], name=str(ref))


def _install(state: State, ref: Any, build_id: int | None) -> Path:
    """The slow path: check the build, download its archive once, unpack it into the cache.

    The cache entry is matched and marked with the build's identity from the server (see
    :func:`._run.build_identity`), so an entry of an equal id from before a server reset is
    never taken for this build.
    """
    from . import _run, _ui

    cfg = state.config
    with state.client() as client:
        if build_id is None:
            build_id = client.resolve(ref)
        build = client.build(build_id)
        identity = _run.build_identity(build, ref.environment if ref.is_environment else None)
        cached = _run.find_cached(cfg.cache_key, build_id, identity=identity)
        if cached is not None:
            return cached
        if build.get("status") in ("FAILED", "CANCELED"):
            from ._build_commands import failure

            raise failure(build_id, build)
        if build.get("status") != "COMPLETED":
            raise CLIError(f"build {build_id} is {build.get('status')}, not COMPLETED yet "
                           f"(wait for it: conda-store wait {build_id} --artifact archive)")
        _wait_for_archive(client, build_id, build)
        directory = _run.build_dir(cfg.cache_key, build_id)
        with _run.build_lock(directory):
            cached = _run.find_cached(cfg.cache_key, build_id, identity=identity)  # another process may have finished
            if cached is not None:
                return cached
            archive = directory / f".download-{time.time_ns()}.tar.gz"
            try:
                result = download_when_ready(client, build_id, "archive", archive, f"build {build_id} environment")
                with _ui.status_progress(f"unpacking build {build_id} into {directory}"):
                    return _run.install_archive(archive, result.sha256, build_id, directory, identity)
            finally:
                archive.unlink(missing_ok=True)


ARCHIVE_WAIT = 600.0
"""Seconds ``run`` and ``download`` wait for an artifact made after the build COMPLETED (the
conda-pack archive: about a second normally, longer behind a busy artifacts queue)."""


def artifact_state(build: dict[str, Any], artifact_type: str) -> tuple[str, str | None] | None:
    """(status, reason) of an artifact from the build's ``artifacts`` (PENDING, READY, FAILED);
    for a server without that field, READY if it is among ``build_artifacts``; None if unknown."""
    for a in build.get("artifacts") or []:
        if a.get("type") == artifact_type:
            return str(a.get("status")), a.get("reason")
    if any(a.get("artifact_type") == artifact_type for a in build.get("build_artifacts") or []):
        return "READY", None
    return None


def artifact_failure(build_id: int, artifact: str, reason: str | None) -> CLIError:
    return CLIError(f"the {artifact} of build {build_id} failed: {reason or 'no reason recorded'} "
                    "(the environment itself is fine; the server's build log has the details)")


def download_when_ready(client: "Client", build_id: int, artifact: str, dest: Path, label: str) -> Any:
    """Download ``artifact``; while the server answers "pending" (409), wait with its state shown,
    until it is READY (then download), FAILED (one line, exit 1) or ``ARCHIVE_WAIT`` passed (124)."""
    from . import _ui
    from ._client import ARTIFACT_TYPES
    from ._errors import ArtifactPending

    deadline = time.monotonic() + ARCHIVE_WAIT
    while True:
        try:
            with _ui.download_progress(label) as progress:
                return client.download(build_id, artifact, dest, progress)
        except ArtifactPending as pending:
            wait = pending.retry_after
        with _ui.status_progress(f"build {build_id}: its {artifact} is PENDING (made after the build completed)") \
                as set_status:
            while True:
                if time.monotonic() + wait > deadline:
                    raise CLIError(f"the {artifact} of build {build_id} is still PENDING after {ARCHIVE_WAIT:g}s; "
                                   "is a conda-store-worker running?", exit_code=124)
                time.sleep(wait)
                state = artifact_state(client.build(build_id), ARTIFACT_TYPES[artifact])
                if state is None or state[0] == "READY":
                    break  # download it (a server that does not say: just try again)
                if state[0] == "FAILED":
                    raise artifact_failure(build_id, artifact, state[1])
                set_status(f"build {build_id}: its {artifact} is {state[0]}")


def _wait_for_archive(client: "Client", build_id: int, build: dict[str, Any]) -> None:
    """The archive is an artifact job that runs after the build completes: wait for it (its state
    shown), fail at once with its reason if it failed."""
    from . import _ui

    state = artifact_state(build, "CONDA_PACK")
    if state is None or state[0] == "READY":
        return  # present, or a server that does not list artifacts: just try the download
    deadline = time.monotonic() + ARCHIVE_WAIT
    with _ui.status_progress(f"build {build_id}: its archive is {state[0]}") as set_status:
        while state is not None and state[0] != "READY":
            if state[0] == "FAILED":
                raise artifact_failure(build_id, "archive", state[1])
            if time.monotonic() > deadline:
                raise CLIError(f"the archive of build {build_id} is still {state[0]} after {ARCHIVE_WAIT:g}s; "
                               "is a conda-store-worker running?", exit_code=124)
            set_status(f"build {build_id}: its archive is {state[0]}")
            time.sleep(0.25)
            state = artifact_state(client.build(build_id), "CONDA_PACK")
