"""URL credentials are redacted before anything is persisted."""

from __future__ import annotations

import pytest

from conda_store_jupyter.urls import redact_text, redact_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://user:s3cret@repo.example/chan", "https://user:***@repo.example/chan"),
        ("https://tok@repo.example/chan/linux-64/a.conda", "https://***@repo.example/chan/linux-64/a.conda"),
        ("https://conda.example/t/tk-1234/chan/noarch/x.conda", "https://conda.example/t/***/chan/noarch/x.conda"),
        ("https://conda.example/t/tk-1234", "https://conda.example/t/***"),
        ("https://conda.anaconda.org/conda-forge", "https://conda.anaconda.org/conda-forge"),
        ("file:///srv/channel", "file:///srv/channel"),
        ("conda-forge", "conda-forge"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent: redacted forms compare equal


def test_redact_text():
    line = "fetching https://bob:pw@host/ch/repodata.json and file:///x failed"
    assert redact_text(line) == "fetching https://bob:***@host/ch/repodata.json and file:///x failed"
