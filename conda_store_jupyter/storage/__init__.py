"""Artifact storage backends. Keys are ``/``-separated and built from build keys and digests only."""

from .base import Storage, artifact_key

__all__ = ["Storage", "artifact_key"]
