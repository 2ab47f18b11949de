"""CLI pieces that need no server: URI grammar, config/JupyterHub discovery, shebangs, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conda_store_jupyter.cli import main
from conda_store_jupyter.cli._config import resolve_config
from conda_store_jupyter.cli._errors import CLIError, http_error
from conda_store_jupyter.cli._shebang import is_shebang_line, shebang_argv
from conda_store_jupyter.cli._uri import BuildURI, parse_uri
from conda_store_jupyter.cli.commands import parse_duration, parse_role_binding

CONDA_STORE = Path(sys.executable).parent / "conda-store"

# ----------------------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    "text, expected",
    [
        ("17", BuildURI(build_id=17)),
        ("alice/ml", BuildURI(namespace="alice", environment="ml")),
        ("alice/ml:17", BuildURI(build_id=17, namespace="alice", environment="ml")),
        ("data-science/py3.11_env:1", BuildURI(build_id=1, namespace="data-science", environment="py3.11_env")),
    ],
)
def test_parse_uri_valid(text, expected):
    uri = parse_uri(text)
    assert uri == expected
    assert str(uri) == text


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "use <build_id>"),
        ("0", "positive integer"),
        ("-3", "positive integer"),
        ("+3", "positive integer"),
        ("1.5", "positive integer"),
        ("١٢", "positive integer"),  # non-ASCII digits that int() accepts
        (" 17", "use <build_id>"),
        ("17:3", "needs <namespace>/<environment>"),
        ("alice/ml:", "positive integer"),
        ("alice/ml:x", "positive integer"),
        ("alice/ml:1:2", "more than one ':'"),
        ("alice/ml/extra", "exactly one '/'"),
        ("alice/", "environment name"),
        ("/ml", "namespace"),
        ("../ml", "not allowed"),
        ("alice/..", "not allowed"),
        ("Alice/ml", "not allowed"),
    ],
)
def test_parse_uri_rejects_with_clear_message(text, needle):
    with pytest.raises(CLIError) as err:
        parse_uri(text)
    message = str(err.value)
    assert needle in message and "\n" not in message and "invalid build URI" in message


# --------------------------------------------------------------------------------------- config

HUB = {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api", "JUPYTERHUB_API_TOKEN": "hubtok"}


def test_default_is_localhost_anonymous():
    cfg = resolve_config(environ={})
    assert (cfg.url, cfg.auth, cfg.auth_headers(), cfg.verify_ssl) == ("http://localhost:8080", "none", {}, True)


def test_option_beats_environment_and_is_normalised():
    env = {"CONDA_STORE_URL": "http://env:1/x"}
    assert resolve_config(url="https://opt:2/prefix/", environ=env).url == "https://opt:2/prefix"
    assert resolve_config(environ=env).url == "http://env:1/x"
    assert resolve_config(environ=env).url_source == "CONDA_STORE_URL"


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://x", "http://"])
def test_bad_url_is_one_line_error(url):
    with pytest.raises(CLIError, match="not an http"):
        resolve_config(url=url, environ={})


def test_token_from_environment_is_bearer():
    cfg = resolve_config(environ={"CONDA_STORE_TOKEN": "abc"})
    assert cfg.auth == "token" and cfg.auth_headers() == {"Authorization": "Bearer abc"}
    assert "abc" not in repr(cfg)


def test_explicit_auth_requires_credentials():
    with pytest.raises(CLIError, match="CONDA_STORE_TOKEN"):
        resolve_config(auth="token", environ={})
    with pytest.raises(CLIError, match="CONDA_STORE_USERNAME"):
        resolve_config(auth="basic", environ={"CONDA_STORE_USERNAME": "u"})
    with pytest.raises(CLIError, match="unknown auth method"):
        resolve_config(environ={"CONDA_STORE_AUTH": "kerberos"})
    basic = resolve_config(environ={"CONDA_STORE_USERNAME": "u", "CONDA_STORE_PASSWORD": "p"})
    assert basic.auth == "basic" and basic.auth_headers() == {}
    assert resolve_config(auth="none", environ={"CONDA_STORE_TOKEN": "abc"}).auth == "none"


def test_jupyterhub_discovery_from_api_url():
    cfg = resolve_config(environ=HUB)
    assert cfg.url == "http://127.0.0.1:8081/services/conda-store"
    assert cfg.url_source == "JupyterHub"
    assert cfg.auth_headers() == {"Authorization": "token hubtok"}


def test_jupyterhub_discovery_keeps_base_url_and_service_name():
    env = {**HUB, "JUPYTERHUB_API_URL": "https://hub.example.org/jhub/hub/api/", "CONDA_STORE_SERVICE_NAME": "envs"}
    assert resolve_config(environ=env).url == "https://hub.example.org/jhub/services/envs"


def test_jupyterhub_public_hub_url_is_preferred():
    env = {**HUB, "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/"}
    assert resolve_config(environ=env).url == "https://hub.example.org/services/conda-store"
    # an empty value (the hub exports it even when unset) falls back to the API URL
    assert resolve_config(environ={**HUB, "JUPYTERHUB_PUBLIC_HUB_URL": ""}).url.startswith("http://127.0.0.1:8081/")


def test_hub_token_is_not_sent_to_an_unrelated_server():
    cfg = resolve_config(environ={**HUB, "CONDA_STORE_URL": "https://elsewhere.example.com"})
    assert cfg.auth == "none" and cfg.auth_headers() == {}
    same_host = resolve_config(environ={**HUB, "CONDA_STORE_URL": "http://127.0.0.1:8081/services/x"})
    assert same_host.auth == "jupyterhub"
    # ...unless the user asks for token auth explicitly
    assert resolve_config(auth="token", environ={**HUB, "CONDA_STORE_URL": "https://elsewhere.example.com"}).auth == "jupyterhub"


def test_explicit_token_beats_hub_token():
    cfg = resolve_config(environ={**HUB, "CONDA_STORE_TOKEN": "mine"})
    assert cfg.auth_headers() == {"Authorization": "Bearer mine"}


def test_bad_service_name_refused():
    with pytest.raises(CLIError):
        resolve_config(environ={**HUB, "CONDA_STORE_SERVICE_NAME": "../admin"})


def test_cache_key_depends_on_url():
    assert resolve_config(url="http://a").cache_key != resolve_config(url="http://b").cache_key


# ---------------------------------------------------------------------------------------- errors


def test_http_errors_are_one_line_and_carry_server_message():
    err = http_error(404, "GET", "http://x/api/v1/build/9/", b'{"status":"error","message":"build id does not exist"}')
    assert str(err) == "not found: build id does not exist (GET http://x/api/v1/build/9/)"
    err = http_error(403, "GET", "http://x/y", b'{"status":"error","message":"request not\\nauthorized"}')
    assert "\n" not in str(err) and str(err).startswith("permission denied")
    assert str(http_error(502, "GET", "http://x/y", b"<html>")).startswith("server error 502")


def test_parse_duration_and_role_binding():
    assert parse_duration("90m").total_seconds() == 5400
    assert parse_duration("3600").total_seconds() == 3600
    for bad in ("0", "-1", "1y", "soon"):
        with pytest.raises(CLIError):
            parse_duration(bad)
    assert parse_role_binding("alice/*=viewer, developer") == ("alice/*", ["viewer", "developer"])
    for bad in ("alice=viewer", "alice/ml", "alice/ml=", "/ml=viewer", "a/b/c=viewer"):
        with pytest.raises(CLIError):
            parse_role_binding(bad)


def test_main_reports_bad_uri_as_one_line(capsys):
    assert main(["run", "Alice/ml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("conda-store: error: invalid build URI")


def test_main_usage_errors_are_one_line(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such command" in err
    assert main(["download"]) == 2
    assert "Missing argument" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["info"], ["token"], ["list"], ["list", "namespace"], ["list", "environment"],
                                     ["list", "build"], ["download"], ["wait"], ["solve"], ["run"]])
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "Usage: conda-store" in capsys.readouterr().out


def test_server_down_is_one_line_without_traceback():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA_STORE", "JUPYTERHUB"))}
    for args in (["info"], ["list", "namespace"], ["run", "alice/ml"], ["download", "3"]):
        proc = subprocess.run([CONDA_STORE, "--conda-store-url", "http://127.0.0.1:9", *args],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("\n") == 1 and "cannot reach conda-store at http://127.0.0.1:9" in proc.stderr
        assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------- shebang


@pytest.mark.parametrize(
    "line, ok",
    [("#!/usr/bin/env conda-store", True), ("#!/opt/bin/conda-store\n", True), ("#! /usr/bin/env -S conda-store", True),
     ("#!/usr/bin/env python", False), ("#!/usr/bin/env conda-store run", False), ("# conda-store", False)],
)
def test_shebang_line(line, ok):
    assert is_shebang_line(line) is ok


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tool.py"
    path.write_text(body)
    return str(path)


def test_shebang_collects_run_lines_in_order(tmp_path):
    script = _script(tmp_path, "#!/usr/bin/env conda-store\n#! conda-store run alice/ml:3\n#! conda-store run -- python -X utf8\nprint(1)\n")
    assert shebang_argv([script, "a", "--b"]) == ["run", "alice/ml:3", "--", "python", "-X", "utf8", script, "a", "--b"]


def test_shebang_defaults_to_python(tmp_path):
    script = _script(tmp_path, "#!/usr/bin/env conda-store\n#! conda-store run 'alice/ml'\n")
    assert shebang_argv([script]) == ["run", "alice/ml", "--", "python", script]


def test_shebang_needs_a_run_line(tmp_path):
    script = _script(tmp_path, "#!/usr/bin/env conda-store\nprint(1)\n")
    with pytest.raises(CLIError, match="needs a line"):
        shebang_argv([script])


def test_not_a_shebang(tmp_path):
    assert shebang_argv([_script(tmp_path, "#!/usr/bin/env python\n#! conda-store run a/b\n")]) is None
    assert shebang_argv(["info"], frozenset({"info"})) is None
    assert shebang_argv([str(tmp_path / "missing")]) is None
    assert shebang_argv([]) is None


def test_command_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("info").write_text("#!/usr/bin/env conda-store\n#! conda-store run a/b\n")
    assert shebang_argv(["info"], frozenset({"info"})) is None
    assert shebang_argv(["./info"], frozenset({"info"})) == ["run", "a/b", "--", "python", "./info"]


def test_shebang_ignores_directives_below_the_leading_comment_block(tmp_path):
    """/tmp/rvw/s.py: a directive quoted in a docstring used to be appended to the real one."""
    script = _script(tmp_path, (
        "#!/usr/bin/env conda-store\n"
        "#! conda-store run bob/prod -- python -u\n"
        '"""Usage: put this in your own script:\n'
        "\n"
        "#! conda-store run alice/ml -- python\n"
        '"""\n'
        'print("hi")\n'
    ))
    assert shebang_argv([script]) == ["run", "bob/prod", "--", "python", "-u", script]
    # a blank line also ends the block
    later = _script(tmp_path, "#!/usr/bin/env conda-store\n\n#! conda-store run a/b\n")
    with pytest.raises(CLIError, match="needs a line"):
        shebang_argv([later])


@pytest.mark.parametrize("directives", [
    ["#! conda-store run alice/ml python -u"],
    ["#! conda-store run --artifact archive alice/ml python"],
    ["#! conda-store run alice/ml", "#! conda-store run python -u"],
])
def test_shebang_refuses_words_after_the_uri_without_separator(tmp_path, directives):
    script = _script(tmp_path, "\n".join(["#!/usr/bin/env conda-store", *directives, "print(1)", ""]))
    with pytest.raises(CLIError) as err:
        shebang_argv([script])
    message = str(err.value)
    assert "\n" not in message and "words after the build URI 'alice/ml' but no '--'" in message
    assert "'#! conda-store run alice/ml -- python" in message


def test_shebang_options_and_separator_are_still_fine(tmp_path):
    script = _script(tmp_path, "#!/usr/bin/env conda-store\n#! conda-store run --artifact archive alice/ml -- python -u\n")
    assert shebang_argv([script]) == ["run", "--artifact", "archive", "alice/ml", "--", "python", "-u", script]


def test_401_says_which_credentials_were_refused():
    body = b'{"status":"error","message":"invalid token: this server does not know it"}'
    refused = str(http_error(401, "GET", "http://x/api/v1/permission/", body, "CONDA_STORE_TOKEN"))
    assert refused.startswith("authentication failed with the credentials from CONDA_STORE_TOKEN: invalid token")
    assert "set CONDA_STORE_TOKEN" not in refused
    anonymous = str(http_error(401, "GET", "http://x/y", b'{"message":"request not authenticated"}'))
    assert anonymous.startswith("not authenticated: set CONDA_STORE_TOKEN")


def test_log_events_parsing():
    from conda_store_jupyter.cli._follow import LogLine, parse_events, step_of

    ids: list[str] = []
    stream = ["data: -- solve", "", ": keep-alive", "", "id: 17-0", "data: == solve: 0.1 s", "",
              "event: end", "data: build finished", "", "data: never read", ""]
    assert list(parse_events(iter(stream), ids.append)) == [
        LogLine("-- solve"), LogLine(None), LogLine("== solve: 0.1 s")]
    assert ids == ["17-0"]
    assert step_of("-- install") == "install" and step_of("== install: 1 s") is None and step_of("-- ") is None


def test_env_target_names(tmp_path):
    from conda_store_jupyter.cli._build_commands import _target

    f = tmp_path / "environment.yaml"
    assert _target(None, "ml", f) == (None, "ml")
    assert _target("alice/web", "ml", f) == ("alice", "web")
    assert _target("web", "ml", f) == (None, "web")
    for bad in ("/web", "alice/", "a/b/c"):
        with pytest.raises(CLIError, match="invalid --name"):
            _target(bad, "ml", f)
    with pytest.raises(CLIError, match="has no 'name:'"):
        _target(None, None, f)
