"""Who is calling and what they may do: Kubernetes identities for the Lambda API (``kfn gateway --auth sigv4``).

Authentication: a SigV4-signed request names an access key kfn issued (``kfn credentials create``); the key lives
in a Secret labelled ``kfn.dev/access-key-id=<id>`` in the namespace of the ServiceAccount it acts as (label
``kfn.dev/service-account``), so the namespace is the "account". The signature is checked by
:mod:`kfn.gateway.sigv4`. An unsigned request is ``system:anonymous``.

Authorisation: Kubernetes RBAC decides, through a LocalSubjectAccessReview of the ServiceAccount on the Function the
call touches (group ``kfn.dev``, resource ``functions``, the function's name):

=====================================================  ======================================================
Lambda operation                                        verb on ``functions.kfn.dev``
=====================================================  ======================================================
Invoke, InvokeAsync, InvokeWithResponseStream, URLs     ``invoke`` (a custom verb: ``get`` alone reads, never runs)
Get*, List* (one function)                              ``get``
ListFunctions (no function named)                       ``list`` (namespace-wide)
CreateFunction                                          ``create``
DeleteFunction                                          ``delete``
every other write (Put/Update/Delete/Publish/Tag …)     ``update``
=====================================================  ======================================================

An unsigned request reaches only what RBAC grants ``system:anonymous``/``system:unauthenticated``, and never a
write. Answers are cached briefly (keys 30 s, decisions 10 s): a revoked grant stops working within seconds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from kfn import names
from kfn.gateway import arn, errors, sigv4

NONE, SIGV4 = "none", "sigv4"
MODES = (NONE, SIGV4)
INVOKE_VERB = "invoke"
KEY_TTL, NEGATIVE_KEY_TTL, DECISION_TTL = 30.0, 5.0, 10.0  # seconds
ANONYMOUS_USER, ANONYMOUS_GROUPS = "system:anonymous", ("system:unauthenticated",)
_INVOKES = {"Invoke", "InvokeAsync", "InvokeWithResponseStream"}


class AccessDeniedException(errors.LambdaError):
    status = 403
    message_key = "Message"


@dataclass(frozen=True)
class Identity:
    """The caller: a ServiceAccount (through its key) or anonymous."""

    namespace: str | None  # None: anonymous
    service_account: str | None
    access_key: str | None = None

    @property
    def user(self) -> str:
        if self.namespace is None:
            return ANONYMOUS_USER
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    @property
    def groups(self) -> list[str]:
        if self.namespace is None:
            return list(ANONYMOUS_GROUPS)
        return ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}", "system:authenticated"]

    def arn(self) -> str:
        """How Lambda's messages name the caller: an IAM user of the namespace's account named after the
        ServiceAccount; anonymous callers are ``anonymous``."""
        if self.namespace is None:
            return "anonymous"
        return f"arn:aws:iam::{names.account_id(self.namespace)}:user/{self.service_account}"


ANONYMOUS = Identity(None, None)


@dataclass(frozen=True)
class Key:
    """An access key kfn issued: its secret and the ServiceAccount it acts as."""

    secret: str
    namespace: str
    service_account: str


@dataclass(frozen=True)
class Operation:
    """A Lambda API call as RBAC sees it."""

    action: str  # lambda:<OperationName>, for messages
    verb: str  # on functions.kfn.dev
    function: str | None  # the FunctionName path parameter (raw), None for account-wide calls
    writes: bool


@lru_cache(maxsize=1)
def _routes() -> list[tuple[str, re.Pattern[str], str, int]]:
    """(method, path regex, operation name, literal length) for every operation of botocore's Lambda model."""
    import botocore.session  # noqa: PLC0415 - once, on the first signed request

    model = botocore.session.Session().get_service_model("lambda")
    out = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = http["requestUri"].split("?", 1)[0]
        pattern = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(uri))
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
        literal = len(re.sub(r"\{[^}]*\}", "", uri))
        out.append((http["method"], re.compile(pattern.rstrip("/") + "/?$"), name, literal))
    out.sort(key=lambda r: -r[3])  # the most specific path first
    return out


def operation(method: str, path: str) -> Operation:
    """The Lambda operation of a request (botocore's service model), as RBAC sees it. Unknown paths are treated
    as a write of nothing in particular (refused unless the caller may update functions)."""
    for m, rx, name, _ in _routes():
        if m != method:
            continue
        found = rx.match(path)
        if found is None:
            continue
        function = found.groupdict().get("FunctionName")
        if name in _INVOKES:
            return Operation(f"lambda:{'InvokeFunction' if name != 'InvokeAsync' else 'InvokeAsync'}",
                             INVOKE_VERB, function, False)
        if name.startswith(("Get", "List")):
            return Operation(f"lambda:{name}", "get" if function else "list", function, False)
        if name == "CreateFunction":
            return Operation("lambda:CreateFunction", "create", None, True)
        if name == "DeleteFunction":
            return Operation("lambda:DeleteFunction", "delete", function, True)
        return Operation(f"lambda:{name}", "update", function, True)
    return Operation("lambda:Unknown", "update", None, True)


def denied(who: Identity, action: str, resource: str) -> AccessDeniedException:
    """Lambda's (IAM's) message for a missing permission."""
    return AccessDeniedException(f"User: {who.arn()} is not authorized to perform: {action} on resource: {resource} "
                                 f"because no identity-based policy allows the {action} action")


KeyLookup = Callable[[str], "Key | None"]
Review = Callable[[str, list[str], str, str | None, str | None], bool]  # user, groups, verb, namespace, name


class Authorizer:
    """Authenticates and authorises requests; *lookup* finds a key (I/O, run in a thread), *review* asks RBAC
    (I/O, run in a thread). Both are cached here."""

    def __init__(self, lookup: KeyLookup, review: Review, region: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lookup, self.review, self.region, self.clock = lookup, review, region, clock
        self._keys: dict[str, tuple[float, Key | None]] = {}
        self._decisions: dict[tuple[str, str, str | None, str | None], tuple[float, bool]] = {}

    async def _key(self, access_key: str) -> Key | None:
        now = self.clock()
        hit = self._keys.get(access_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await asyncio.to_thread(self.lookup, access_key)
        if len(self._keys) > 10000:
            self._keys.clear()
        self._keys[access_key] = (now + (KEY_TTL if key else NEGATIVE_KEY_TTL), key)
        return key

    async def identify(self, method: str, path: str, raw_query: str, headers: Mapping[str, str],
                       body: bytes) -> Identity:
        """The caller of a request: ANONYMOUS when unsigned. Raises (403) IncompleteSignatureException,
        InvalidSignatureException (bad or expired signature), UnrecognizedClientException (unknown key)."""
        value = headers.get("authorization")
        if not value:
            return ANONYMOUS
        parsed = sigv4.parse_authorization(value)
        key = await self._key(parsed.access_key)
        if key is None:
            raise sigv4.UnrecognizedClientException(sigv4.UNKNOWN_KEY)
        sigv4.verify(method, path, raw_query, headers, body, parsed, key.secret, self.region,
                     datetime.now(timezone.utc))
        return Identity(key.namespace, key.service_account, parsed.access_key)

    async def allowed(self, who: Identity, verb: str, namespace: str | None, function: str | None) -> bool:
        """Whether RBAC lets *who* do *verb* on the function (or on functions of the namespace)."""
        cache_key = (who.user, verb, namespace, function)
        now = self.clock()
        hit = self._decisions.get(cache_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        ok = await asyncio.to_thread(self.review, who.user, who.groups, verb, namespace, function)
        if len(self._decisions) > 10000:
            self._decisions.clear()
        self._decisions[cache_key] = (now + DECISION_TTL, ok)
        return ok

    async def authorize(self, who: Identity, op: Operation, namespace: str | None, function: str | None,
                        resource_arn: str) -> None:
        """Raise AccessDeniedException unless *who* may do *op* on *function* (None: namespace-wide); anonymous
        callers never write."""
        if op.writes and who.namespace is None:
            raise denied(who, op.action, resource_arn)
        if not await self.allowed(who, op.verb, namespace, function):
            raise denied(who, op.action, resource_arn)


def resolve(op: Operation, query_qualifier: str | None, view: arn.CatalogView, default_namespace: str,
            region: str) -> tuple[str, str | None, str]:
    """``(namespace, function, resource ARN)`` of a call (function None: namespace-wide). Raises the name's own
    Lambda errors (ValidationException, ResourceNotFoundException) as the call itself would."""
    if op.function is None:
        return default_namespace, None, names.function_arn(region, names.account_id(default_namespace), "*")
    ref = arn.parse_function_name(op.function, query_qualifier)
    namespace = arn.resolve_namespace(ref, view, default_namespace, region=region)
    return namespace, ref.function, names.function_arn(region, names.account_id(namespace), ref.function,
                                                       ref.qualifier)


def k8s_lookup(access_key: str, namespaces: tuple[str, ...] = ()) -> Key | None:
    """Find an access key's Secret by its label, in *namespaces* (the gateway's; empty: all); None when there is
    none (or two: ambiguous)."""
    import base64  # noqa: PLC0415

    from kfn import k8s  # noqa: PLC0415 - the gateway's I/O edge

    if not re.fullmatch(r"[A-Z0-9]{16,128}", access_key):
        return None  # never a label selector built from arbitrary text
    selector = f"{names.LABEL_ACCESS_KEY_ID}={access_key}"
    found = [s for ns in (namespaces or (None,)) for s in k8s.list_objects("Secret", ns, selector)]
    if len(found) != 1:
        return None
    secret = found[0]
    data = secret.get("data") or {}
    labels = (secret.get("metadata") or {}).get("labels") or {}
    try:
        key = base64.b64decode(data.get("secretAccessKey", "")).decode()
    except ValueError:
        return None
    sa = labels.get(names.LABEL_ACCESS_KEY_SERVICE_ACCOUNT)
    if not key or not sa:
        return None
    return Key(key, secret["metadata"]["namespace"], sa)


def k8s_review(user: str, groups: list[str], verb: str, namespace: str | None, function: str | None) -> bool:
    """RBAC's answer (a LocalSubjectAccessReview in the function's namespace)."""
    from kfn import k8s  # noqa: PLC0415 - the gateway's I/O edge

    if namespace is None:
        return False  # every call kfn checks is in a namespace (account-wide calls: the default namespace)
    allowed, _ = k8s.access_review(user, groups, verb, names.GROUP, names.FUNCTION_PLURAL, namespace, function)
    return allowed

