"""Artifacts in an S3 bucket (AWS, MinIO, Ceph RGW, moto...) through boto3.

Downloads never pass through the server when it can avoid it: after its permission check the
server answers with a redirect to a presigned GET URL valid for ``presign_expiry`` seconds, so a
leaked URL is useless soon after. Uploads use boto3's managed transfer (multipart for large
conda-pack archives); reads stream (``open`` returns the response body, not a buffer).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from traitlets import Bool, Integer, Unicode

from .base import Storage, check_key

PRESIGN_MAX_EXPIRY = 7 * 24 * 3600
"""S3's own limit on presigned URL lifetime (SigV4)."""


class S3Storage(Storage):
    """Artifacts stored as objects ``<key_prefix><key>`` in ``bucket_name``."""

    bucket_name = Unicode(
        "conda-store",
        help="Bucket holding the artifacts. Created on first use if ``create_bucket`` is True.",
    ).tag(config=True)

    endpoint_url = Unicode(
        None,
        allow_none=True,
        help="""S3 endpoint URL for non-AWS services (``http://minio:9000``). Unset means AWS,
        using ``region`` to pick the endpoint.""",
    ).tag(config=True)

    region = Unicode(
        "us-east-1",
        help="Region of the bucket (used for signing; most S3-compatible services accept us-east-1).",
    ).tag(config=True)

    access_key = Unicode(
        None,
        allow_none=True,
        help="""Access key id. Unset uses boto3's default credential chain (environment variables,
        ~/.aws, instance or pod roles), which is preferable to a key in a config file.""",
    ).tag(config=True)

    secret_key = Unicode(
        None,
        allow_none=True,
        help="Secret access key matching ``access_key`` (unset: boto3's default credential chain).",
    ).tag(config=True)

    key_prefix = Unicode(
        "",
        help="Prefix prepended to every object key (``conda-store/``), to share a bucket with others.",
    ).tag(config=True)

    presign_expiry = Integer(
        300,
        help="""Seconds a presigned download URL stays valid. Keep it short: whoever holds the URL
        can download the artifact without further checks until it expires.""",
    ).tag(config=True)

    path_style = Bool(
        True,
        help="""Address buckets as ``<endpoint>/<bucket>/<key>`` (path style), which MinIO and most
        self-hosted services need; set False for virtual-host style on AWS.""",
    ).tag(config=True)

    create_bucket = Bool(
        False,
        help="Create ``bucket_name`` if it does not exist on first use (handy for MinIO/tests).",
    ).tag(config=True)

    _client = None
    _bucket_checked = False

    # -- client -------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url or None,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path" if self.path_style else "auto"},
                    retries={"max_attempts": 5, "mode": "standard"},
                ),
            )
        if self.create_bucket and not self._bucket_checked:
            self._ensure_bucket(self._client)
        return self._client

    def _ensure_bucket(self, client) -> None:
        from botocore.exceptions import ClientError

        try:
            client.head_bucket(Bucket=self.bucket_name)
        except ClientError:
            kwargs = {}
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            client.create_bucket(Bucket=self.bucket_name, **kwargs)
        self._bucket_checked = True

    def _object(self, key: str) -> str:
        return f"{self.key_prefix}{check_key(key)}"

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    # -- Storage API --------------------------------------------------------------------------
    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        self.client.upload_file(str(path), self.bucket_name, self._object(key),
                                ExtraArgs={"ContentType": content_type})

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket_name, Key=self._object(key), Body=data, ContentType=content_type)

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket_name, Key=self._object(key))
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise self._missing(key)
        return int(head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        """The object's streaming body (read in chunks; nothing is buffered whole)."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket_name, Key=self._object(key))
        except ClientError as exc:
            if self._is_missing(exc):
                raise self._missing(key) from None
            raise
        return response["Body"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket_name, Key=self._object(key))  # idempotent in S3

    def presigned_url(self, key: str, expires_in: int | None = None) -> str:
        """A GET URL for ``key`` valid ``expires_in`` seconds (default ``presign_expiry``)."""
        expires = int(expires_in or self.presign_expiry)
        if not 0 < expires <= PRESIGN_MAX_EXPIRY:
            raise ValueError(f"expires_in must be between 1 and {PRESIGN_MAX_EXPIRY} seconds")
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket_name, "Key": self._object(key)}, ExpiresIn=expires
        )
