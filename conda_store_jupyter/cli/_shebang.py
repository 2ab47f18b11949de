"""``#!/usr/bin/env conda-store`` scripts.

A script such as::

    #!/usr/bin/env conda-store
    #! conda-store run alice/ml -- python
    import numpy

is started by the kernel as ``conda-store <script> [args]``. We recognise that form (argv[1] is a
file whose first line is a conda-store shebang), collect every later ``#! conda-store run ...``
line (shlex-split, concatenated in order) and turn the call into
``conda-store run <collected args> <script> [args]``. Without an explicit command the script is
run with ``python``: executing the script itself would re-enter this shebang forever.

Only the first 64 KiB are read, and only the leading block of comment lines is considered (it
ends at the first line that does not start with ``#``): a ``#! conda-store run`` line in a
docstring or a string further down is data, not a directive, and must not change what runs.
Words after the build URI need a ``--`` before them; ``run alice/ml python -u`` would otherwise
be read in surprising ways, so it is refused rather than guessed at.
"""

from __future__ import annotations

import os
import re
import shlex

from ._errors import CLIError

_SHEBANG = re.compile(r"^#!\s*(?:\S*/)?(?:env\s+(?:-\S+\s+)*)?conda-store\s*$")
_DIRECTIVE = re.compile(r"^#!\s*conda-store\s+run(?:\s+(?P<args>.*))?$")
_READ_LIMIT = 64 * 1024


def is_shebang_line(line: str) -> bool:
    """True for ``#!/usr/bin/env conda-store``, ``#!/path/to/conda-store`` (nothing after)."""
    return bool(_SHEBANG.match(line.rstrip("\r\n")))


def _looks_like_script(arg: str, commands: frozenset[str]) -> bool:
    # The kernel passes the script path as invoked; a bare word that is also a command name
    # (``conda-store info``) is the command, never a file that happens to be in the cwd.
    if arg.startswith("-") or (arg in commands and os.sep not in arg):
        return False
    return os.path.isfile(arg)


_OPTIONS_WITH_VALUE = frozenset({"--artifact"})


def _check_words_after_uri(script: str, collected: list[str]) -> None:
    """Refuse ``URI word ...`` without ``--``: the command must be marked as such."""
    head = collected[: collected.index("--")] if "--" in collected else collected
    positional: list[str] = []
    i = 0
    while i < len(head):
        word = head[i]
        if word in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if not word.startswith("-"):
            positional.append(word)
        i += 1
    if len(positional) > 1:
        raise CLIError(
            f"{script}: '#! conda-store run {' '.join(head)}' has words after the build URI "
            f"{positional[0]!r} but no '--'; write '#! conda-store run {positional[0]} -- {' '.join(positional[1:])}'"
        )


def shebang_argv(argv: list[str], commands: frozenset[str] = frozenset()) -> list[str] | None:
    """Rewrite ``[script, *args]`` into ``["run", ..., script, *args]``; None if not a script."""
    if not argv or not _looks_like_script(argv[0], commands):
        return None
    script = argv[0]
    try:
        with open(script, "rb") as fh:
            head = fh.read(_READ_LIMIT)
    except OSError:
        return None
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines or not is_shebang_line(lines[0]):
        return None
    collected: list[str] = []
    found = False
    for line in lines[1:]:
        if not line.startswith("#"):
            break  # the end of the leading comment block: nothing below is a directive
        match = _DIRECTIVE.match(line.strip())
        if match:
            found = True
            try:
                collected += shlex.split(match.group("args") or "")
            except ValueError as exc:
                raise CLIError(f"{script}: cannot parse {line.strip()!r}: {exc}") from None
    if not found or not collected:
        raise CLIError(
            f"{script}: a '#!/usr/bin/env conda-store' script needs a line "
            "'#! conda-store run <namespace>/<environment> [-- command]'"
        )
    _check_words_after_uri(script, collected)
    if "--" not in collected:
        collected += ["--", "python"]
    elif collected[-1] == "--":
        collected.append("python")
    return ["run", *collected, script, *argv[1:]]
