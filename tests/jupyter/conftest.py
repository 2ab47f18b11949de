"""pytest-jupyter for the tests of the jupyter-server extension, and only for them.

Its plugin has autouse fixtures (an event loop and a ``ServerApp`` per test) and takes over
coroutine tests; registered for the whole suite (``pytest_plugins`` in ``tests/conftest.py``)
it would run in every other test too. Imported here, its fixtures and hooks apply to this
directory only.
"""

import pytest

pytest.importorskip("jupyter_server", reason="jupyter-server is not installed")

from pytest_jupyter.jupyter_server import *  # noqa: E402,F401,F403 - fixtures and hooks of the plugin


@pytest.fixture(autouse=True)
def _no_outside_service_settings(monkeypatch):
    """The developer's own CONDA_STORE_* / JUPYTERHUB_* variables must not steer these tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("CONDA_STORE", "JUPYTERHUB")):
            monkeypatch.delenv(name)
