"""The jupyter-server extension: JupyterLab reaches the conda-store service through the user's
own server (``<base_url>conda-store/…``), which adds the credential, so there is no second login
in Lab and no token in the browser.

Enabled by ``jupyter-config/jupyter_server_config.d/conda_store_jupyter.json`` (installed with
the wheel) or ``jupyter server extension enable conda_store_jupyter.jupyter``.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    # Imported here: ``conda_store_jupyter`` itself must not need jupyter-server installed.
    from .app import CondaStoreExtension

    return [{"module": "conda_store_jupyter.jupyter", "app": CondaStoreExtension}]
