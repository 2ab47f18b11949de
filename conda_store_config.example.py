# conda_store_config.example.py — one traitlets file read by conda-store-server and conda-store-worker.
#
#   conda-store-server --config conda_store_config.py
#   conda-store-worker --config conda_store_config.py      (any number, on any host)
#
# Every option is documented: `conda-store-server --help-all`.
c = get_config()  # noqa: F821

# -- the store: database, queue, storage, channels ------------------------------------------
c.CondaStore.store_directory = "/srv/conda-store"
c.CondaStore.database_url = "postgresql+psycopg://conda_store:secret@db.internal/conda_store"
c.CondaStore.redis_url = "redis://redis.internal:6379/0"
c.CondaStore.conda_default_channels = ["conda-forge"]
c.CondaStore.conda_allowed_channels = ["conda-forge", "bioconda"]
c.CondaStore.build_timeout = 3600
# Global defaults of the settings admins may override per namespace/environment (PUT /api/v1/setting/...):
# c.CondaStore.conda_included_packages = ["ipykernel"]
# c.CondaStore.build_artifacts = ["LOCKFILE", "YAML", "CONDA_PACK", "DOCKER_MANIFEST"]
# Environments kept in step with a directory of environment.yaml files (a git checkout), read by the server:
# c.CondaStore.watch_paths = ["/srv/environments"]
# c.CondaStore.filesystem_namespace = "filesystem"
# Artifacts on S3 instead of local disk (downloads then redirect to short presigned URLs):
# c.CondaStore.storage_class = "conda_store_jupyter.storage.s3.S3Storage"

# -- the web service ---------------------------------------------------------------------------
c.CondaStoreServer.address = "0.0.0.0"
c.CondaStoreServer.port = 8080
c.CondaStoreServer.url_prefix = "/conda-store"
c.CondaStoreServer.max_page_size = 100
c.CondaStoreServer.max_body_size = 1024 * 1024
# Server processes on the port (default: one per core; 1 = a single process, as before):
# c.CondaStoreServer.processes = 4
# Where `docker pull` reaches the registry (/v2/ at the host's root). Default: the host the page is
# opened at; set it behind JupyterHub, whose proxy forwards /services/conda-store/ but not /v2/:
# c.CondaStoreServer.registry_url = "conda-store.example.org:8080"

# -- who may do what ---------------------------------------------------------------------------
c.AuthenticationBackend.admin_users = {"alice"}
c.AuthenticationBackend.unauthenticated_role_bindings = {}          # anonymous users see nothing
c.AuthenticationBackend.predefined_tokens = {
    # a read-only service account, e.g. for CI; use a long random string
    # "<secret>": {"primary_namespace": "ci", "role_bindings": {"*/*": ["viewer"]}, "username": "ci-bot"},
}
# Password login for the upstream client's basic mode (tests/demos only):
# c.AuthenticationBackend.authenticator_class = "conda_store_jupyter.auth.backend.DummyAuthenticator"
# c.DummyAuthenticator.password = "change-me"
