# jupyterhub_config.py — JupyterHub with conda-store-jupyter as a hub-managed service.
#
#   jupyterhub -f examples/jupyterhub_config.py
#
# What it gives: the service at <hub>/services/conda-store/ (in the hub's Services menu, logged in
# through the hub), users' hub tokens accepted by it, and JupyterLab's conda-store panel working
# with no second login: each user's jupyter-server calls the service with its own hub token
# (the conda-store jupyter-server extension, enabled by `pip install conda-store-jupyter`).
# tests/jupyter/test_hub_lab.py runs this file (with its own ports and paths) against a real hub.
import sys

c = get_config()  # noqa: F821

SERVICE = "conda-store"

# Where users reach the hub. Needed: user servers (the Lab panel, the `conda-store` CLI in a
# terminal) find the service at <public_url>/services/conda-store/ from it (the hub sets
# JUPYTERHUB_PUBLIC_HUB_URL for them). Without it they only know the hub's internal API URL,
# which does not route /services/.
c.JupyterHub.public_url = "http://127.0.0.1:8000"

# The service: the hub starts it, stops it and routes /services/conda-store/ to `url`; the server
# takes its port and URL prefix from the hub. Its own settings (database, Redis, storage,
# channels, workers) are in its config file: see conda_store_config.example.py.
c.JupyterHub.services = [
    {
        "name": SERVICE,
        "url": "http://127.0.0.1:5050",
        "command": [sys.executable, "-m", "conda_store_jupyter.server.app",
                    "--config", "/etc/conda-store/conda_store_config.py"],
        "oauth_no_confirm": True,  # no "Authorize access" page on the first visit
        "display": True,  # listed in the hub's Services menu
    },
]

# `docker pull` lines: the hub's proxy does not route /v2/ to the service, so set
# c.CondaStoreServer.registry_url in the service's config file to an address where docker clients
# reach the service's registry (its own host:port, or a route for /v2/ in front of it).

c.JupyterHub.load_roles = [
    # JupyterHub's default "user" role is only ["self"]: users may not use any service.
    {"name": "user", "scopes": ["self", f"access:services!service={SERVICE}"]},
]

# The token a user's server gets ($JUPYTERHUB_API_TOKEN) may call the service as that user.
# The first two scopes are JupyterHub's defaults; keep them.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    f"access:services!service={SERVICE}",
]
c.Spawner.default_url = "/lab"
