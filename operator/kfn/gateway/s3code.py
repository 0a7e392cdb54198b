"""Code from an S3-compatible store: CreateFunction/UpdateFunctionCode's ``S3Bucket``/``S3Key``/``S3ObjectVersion``.

The gateway fetches the object once, at write time, from the store ``kfn gateway --s3-endpoint`` names (path-style
URLs, as MinIO, moto's server and most S3-compatible stores serve them), then stores it like a ``ZipFile`` upload
(:mod:`kfn.gateway.writes`): the function never depends on the store afterwards, as on Lambda. Requests are signed
with AWS Signature Version 4 when the gateway has credentials (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in its
environment), unsigned otherwise.

:func:`signed_get` is pure (a unit test holds it against botocore's signer); :func:`fetch` is the I/O.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kfn.gateway import errors

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
FETCH_TIMEOUT = 30.0  # seconds for one object


@dataclass(frozen=True)
class Store:
    """Where code objects are fetched from: ``endpoint`` (``http://host:port``), the signing region and keys."""

    endpoint: str
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_get(store: Store, bucket: str, key: str, version: str | None,
               now: datetime.datetime) -> tuple[str, dict[str, str]]:
    """The URL and headers of a (SigV4-signed, when the store has keys) path-style GetObject."""
    parts = urllib.parse.urlsplit(store.endpoint)
    path = f"{parts.path.rstrip('/')}/{urllib.parse.quote(bucket, safe='')}/{urllib.parse.quote(key, safe='/~')}"
    query = f"versionId={urllib.parse.quote(version, safe='~')}" if version else ""
    url = f"{parts.scheme}://{parts.netloc}{path}" + (f"?{query}" if query else "")
    if not store.access_key or not store.secret_key:
        return url, {}
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"host": parts.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["GET", path, query, *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
                           EMPTY_SHA256])
    scope = f"{day}/{store.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = _hmac(_hmac(_hmac(_hmac(f"AWS4{store.secret_key}".encode(), day), store.region), "s3"),
                        "aws4_request")
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items() if k != "host"}
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={store.access_key}/{scope}, SignedHeaders={signed}, "
                            f"Signature={signature}")
    return url, out


def get_object_error(body: bytes, status: int) -> errors.InvalidParameterValueException:
    """Lambda's message for a code object it could not get: ``Error occurred while GetObject. S3 Error Code:
    NoSuchKey. S3 Error Message: The specified key does not exist.``"""
    code, message = f"HTTP{status}", ""
    try:
        root = ET.fromstring(body)
        # S3's error document; some stores namespace it, so match local names
        fields = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
        code = fields.get("Code") or code
        message = fields.get("Message", "")
    except ET.ParseError:
        message = body[:200].decode("utf-8", "replace")
    return errors.InvalidParameterValueException(
        f"Error occurred while GetObject. S3 Error Code: {code}. S3 Error Message: {message}")


def fetch(store: Store, bucket: str, key: str, version: str | None, limit: int) -> bytes:
    """The object's bytes (at most *limit*: more raises :func:`kfn.gateway.writes.code_too_large`'s error via
    ``OverflowError``). Raises InvalidParameterValueException with S3's error code when the store refuses."""
    url, headers = signed_get(store, bucket, key, version, datetime.datetime.now(datetime.timezone.utc))
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=FETCH_TIMEOUT) as r:
            data = r.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise get_object_error(e.read(), e.code) from None
    except OSError as e:
        raise errors.InvalidParameterValueException(
            f"Error occurred while GetObject. S3 Error Code: ServiceUnavailable. S3 Error Message: {e}") from None
    if len(data) > limit:
        raise OverflowError(len(data))
    return data
