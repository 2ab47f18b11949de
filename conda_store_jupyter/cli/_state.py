"""What every command shares: the top-level options (resolved lazily) and common click options.

Its own module so that command modules (``commands``, ``_build_commands``) can share it without
importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._config import Config, resolve_config

if TYPE_CHECKING:
    from ._client import Client

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class State:
    """Options of the top-level group, resolved lazily so ``--help`` works without a server."""

    def __init__(self, url: str | None, auth: str | None, no_verify_ssl: bool) -> None:
        self._args = (url, auth, no_verify_ssl)
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = resolve_config(*self._args)
        return self._config

    def client(self, timeout: float = 60.0) -> "Client":
        from ._client import Client

        return Client(self.config, timeout=timeout)


pass_state = click.make_pass_decorator(State)


output_option = click.option("--output", type=click.Choice(("table", "json")), default="table", show_default=True)
