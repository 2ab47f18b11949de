"""conda-store-jupyter: reproducible conda environments for teams, served wherever Jupyter runs."""

__version__ = "0.1.0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (``jupyter labextension develop`` links it for editable
    installs; wheels ship it under ``share/jupyter/labextensions/conda-store-jupyter``)."""
    return [{"src": "labextension", "dest": "conda-store-jupyter"}]
