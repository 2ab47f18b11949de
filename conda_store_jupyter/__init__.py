"""conda-store-jupyter: reproducible conda environments for teams, served wherever Jupyter runs."""

__version__ = "0.1.0"
