"""The service layer's public surface is curated (httpx-style): __all__ is exactly what it exports."""

from conda_store_jupyter import api


def test_api_all_is_the_public_surface():
    public = sorted(name for name in vars(api) if not name.startswith("_") and name not in {
        "builds", "environments", "kernels", "namespaces", "packages", "annotations"})
    assert sorted(api.__all__) == public
