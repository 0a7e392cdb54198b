"""AWS Signature Version 4 verification of requests to the gateway (``kfn gateway --auth sigv4``).

Pure: :func:`verify` takes the request as received and the secret of the key it names, recomputes the signature
with botocore's own signer (``botocore.auth.SigV4Auth`` over a rebuilt ``AWSRequest``, restricted to the headers
the client signed), and compares in constant time. Finding the key (Secrets) is the caller's business
(:mod:`kfn.gateway.auth`).

Errors are Lambda's (403 ``InvalidSignatureException``, ``IncompleteSignatureException`` shapes of AWS's SigV4
front door); messages are AWS's own texts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from kfn.gateway.errors import LambdaError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "lambda"
MAX_SKEW = timedelta(minutes=15)  # AWS refuses a signature more than 15 minutes from its clock, either way
TIMESTAMP = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class InvalidSignatureException(LambdaError):
    status = 403


class IncompleteSignatureException(LambdaError):
    status = 403


class UnrecognizedClientException(LambdaError):
    status = 403


SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your "
                      "AWS Secret Access Key and signing method. Consult the service documentation for details.")
REGION_SCOPE = "Credential should be scoped to a valid region. "  # AWS's text, trailing space included
UNKNOWN_KEY = "The security token included in the request is invalid."


@dataclass(frozen=True)
class Authorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`` header."""

    access_key: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    """Parse the header; raises IncompleteSignatureException (AWS's messages) when a part is missing."""
    algorithm, _, rest = value.strip().partition(" ")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        k, eq, v = item.strip().partition("=")
        if eq:
            parts[k] = v
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
    if algorithm != ALGORITHM or missing:
        missing = missing or ["Credential", "SignedHeaders", "Signature"]
        raise IncompleteSignatureException(
            " ".join(f"Authorization header requires '{k}' parameter." for k in missing)
            + f" Authorization={value[:100]}")
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise IncompleteSignatureException(REGION_SCOPE)
    return Authorization(scope[0], scope[1], scope[2], scope[3], tuple(parts["SignedHeaders"].split(";")),
                         parts["Signature"])


@lru_cache(maxsize=1)
def _signer_class() -> Any:
    """botocore's SigV4 signer, signing exactly the headers the client listed (botocore itself would choose).
    Imported on the first signed request: a gateway without --auth sigv4 never loads botocore."""
    from botocore.auth import SigV4Auth  # noqa: PLC0415
    from botocore.awsrequest import HTTPHeaders  # noqa: PLC0415

    class Signer(SigV4Auth):
        def __init__(self, credentials: Any, service: str, region: str, signed: tuple[str, ...]) -> None:
            super().__init__(credentials, service, region)
            self._signed = signed

        def headers_to_sign(self, request: Any) -> Any:
            out = HTTPHeaders()
            for name in self._signed:
                out[name] = request.headers.get(name, "")
            return out

    return Signer


def _timestamp(headers: Mapping[str, str]) -> str:
    stamp = headers.get("x-amz-date")
    if not stamp:
        raise IncompleteSignatureException(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    return stamp


def check_time(stamp: str, now: datetime) -> None:
    """AWS's clock-skew rule: the request's X-Amz-Date within 15 minutes of *now* (UTC)."""
    try:
        when = datetime.strptime(stamp, TIMESTAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        raise IncompleteSignatureException(f"Date must be in ISO-8601 'basic format'. Got '{stamp}'. See "
                                           "http://en.wikipedia.org/wiki/ISO_8601") from None
    fmt = lambda t: t.strftime(TIMESTAMP)  # noqa: E731
    if when < now - MAX_SKEW:
        raise InvalidSignatureException(
            f"Signature expired: {stamp} is now earlier than {fmt(now - MAX_SKEW)} ({fmt(now)} - 15 min.)")
    if when > now + MAX_SKEW:
        raise InvalidSignatureException(
            f"Signature not yet current: {stamp} is still later than {fmt(now + MAX_SKEW)} ({fmt(now)} + 15 min.)")


def verify(method: str, path: str, raw_query: str, headers: Mapping[str, str], body: bytes, auth: Authorization,
           secret_key: str, region: str, now: datetime) -> None:
    """Raise InvalidSignatureException unless *auth* signs this request with *secret_key*.

    *path* decoded (the gateway's parser decodes it), *raw_query* as received; *headers* with lower-cased names;
    *now* UTC. The path is re-encoded as SigV4 clients send it (every byte but unreserved characters and '/'),
    which is also how AWS computes the canonical URI of a non-S3 request from the decoded path.
    """
    if auth.service != SERVICE or auth.region != region:
        raise InvalidSignatureException(REGION_SCOPE)
    stamp = _timestamp(headers)
    if stamp[:8] != auth.date:
        raise InvalidSignatureException(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.date}' != '{stamp[:8]}', from '{stamp}'.")
    check_time(stamp, now)
    if "host" not in auth.signed_headers:
        raise InvalidSignatureException(SIGNATURE_MISMATCH)
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != UNSIGNED_PAYLOAD and claimed != hashlib.sha256(body).hexdigest():
        raise InvalidSignatureException(SIGNATURE_MISMATCH)  # a body other than the one the client hashed
    host = headers.get("host", "localhost")
    url = f"http://{host}{quote(path, safe='/~')}" + (f"?{raw_query}" if raw_query else "")
    sent: dict[str, Any] = {name: headers.get(name, "") for name in auth.signed_headers}
    if claimed is not None:
        sent["X-Amz-Content-SHA256"] = claimed  # botocore then signs the claimed hash, as the client did
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415 - see _signer_class
    from botocore.credentials import Credentials  # noqa: PLC0415

    request = AWSRequest(method=method, url=url, data=body, headers=sent)
    request.context["timestamp"] = stamp
    signer = _signer_class()(Credentials(auth.access_key, secret_key), auth.service, auth.region,
                             auth.signed_headers)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise InvalidSignatureException(SIGNATURE_MISMATCH)
