"""Storage backends: LocalStorage on disk and S3Storage against a real S3 HTTP endpoint (moto).

Both run the same contract (put/exists/size/streaming open/delete, key validation, NotFoundError);
S3 additionally hands out presigned URLs, fetched here with httpx like a browser or `conda-store
download` would.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from conda_store_jupyter.exceptions import NotFoundError
from conda_store_jupyter.schema import BuildArtifactType
from conda_store_jupyter.storage.base import artifact_key
from conda_store_jupyter.storage.local import LocalStorage
from conda_store_jupyter.storage.s3 import S3Storage


@pytest.fixture
def s3_storage(s3_endpoint):
    return S3Storage(
        bucket_name=f"cs-{uuid.uuid4().hex[:12]}",
        endpoint_url=s3_endpoint,
        access_key="test",
        secret_key="test",
        create_bucket=True,
        presign_expiry=60,
    )


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(store_directory=str(tmp_path))
    return request.getfixturevalue("s3_storage")


def test_storage_contract(storage, tmp_path):
    key = artifact_key(BuildArtifactType.CONDA_PACK, "0123abcd-1700000000-1-demo")
    big = tmp_path / "archive.tar.gz"
    data = uuid.uuid4().bytes * (3 << 16)  # 3 MiB
    big.write_bytes(data)
    assert not storage.exists(key)
    storage.put_file(key, big, content_type="application/gzip")
    assert storage.exists(key) and storage.size(key) == len(data)
    chunks = list(storage.iter_chunks(key, chunk_size=1 << 20))
    assert len(chunks) >= 3 and b"".join(chunks) == data  # streamed, not one buffer
    with storage.open(key) as f:
        assert f.read(16) == data[:16]

    log_key = artifact_key(BuildArtifactType.LOGS, "0123abcd-1700000000-1-demo")
    storage.put_bytes(log_key, b"line 1\n")
    storage.put_bytes(log_key, b"line 1\nline 2\n")  # overwrite
    assert storage.get_bytes(log_key) == b"line 1\nline 2\n"

    storage.delete(key)
    storage.delete(key)  # idempotent
    assert not storage.exists(key)
    with pytest.raises(NotFoundError):
        storage.size(key)
    with pytest.raises(NotFoundError):
        storage.open(key)
    for bad in ("../etc/passwd", "/abs", "a//b", ".hidden", "a/../b"):
        with pytest.raises(ValueError):
            storage.put_bytes(bad, b"x")


def test_local_storage_has_no_presigned_urls(tmp_path):
    assert LocalStorage(store_directory=str(tmp_path)).presigned_url("logs/x.log") is None


def test_s3_presigned_url_is_a_short_lived_get(s3_storage):
    key = artifact_key(BuildArtifactType.LOCKFILE, "0123abcd-1700000000-7-demo")
    s3_storage.put_bytes(key, b"version: 1\n", content_type="text/yaml")
    url = s3_storage.presigned_url(key, expires_in=30)
    assert "X-Amz-Expires=30" in url and "X-Amz-Signature=" in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"version: 1\n"
    assert response.headers["content-type"] == "text/yaml"
    assert "X-Amz-Expires=60" in s3_storage.presigned_url(key)  # presign_expiry default
    # Tampering with the signed key is refused by the server.
    assert httpx.get(url.replace("7-demo", "8-demo")).status_code in (403, 404)
    with pytest.raises(ValueError):
        s3_storage.presigned_url(key, expires_in=8 * 24 * 3600)


def test_s3_key_prefix_and_config_traits(s3_endpoint):
    storage = S3Storage(bucket_name=f"cs-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, access_key="k",
                        secret_key="s", create_bucket=True, key_prefix="team-a/")
    storage.put_bytes("yaml/x.yml", b"name: x\n")
    listed = storage.client.list_objects_v2(Bucket=storage.bucket_name)["Contents"]
    assert [o["Key"] for o in listed] == ["team-a/yaml/x.yml"]
    for trait in ("bucket_name", "endpoint_url", "region", "access_key", "secret_key", "presign_expiry"):
        assert S3Storage.class_traits()[trait].help, trait
