"""Reconcile a Function: its $LATEST environments, declarative publishing, version retention.

Publishing (see docs/versions.md): bumping ``spec.publish`` asks for one new
FunctionVersion; ``spec.autoPublish`` asks for one whenever code or
configuration differ from the newest version. Like Lambda's PublishVersion,
nothing is published when the newest version already matches $LATEST. The
request a version answered is recorded on it (annotation
``kfn.dev/publish-request``), so a crash between creating a version and writing
status never publishes twice.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

from kfn import conditions as cond
from kfn.scaler import decide as rules
from kfn import k8s, names
from kfn.models.base import SpecError
from kfn.models.function import parse_function_spec
from kfn.reconcilers.codesigning import reconcile_signed_environment
from kfn.reconcilers.common import WAIT_SECONDS, Outcome, being_deleted, finish, invalid_spec, log
from kfn.reconcilers.environment import (
    CodeUnavailable,
    code_sha256,
    provisioned_floor,
    capped_floor,
    read_zip,
    version_config_sha256,
)
from kfn.resources import EnvironmentInput, Images, Owner
from kfn.resources.code import ZIP_KEY, image_sha256
from kfn.resources.common import owner_reference


def function_selector(function: str) -> str:
    """The label selector of a function's versions and aliases (see :func:`ensure_function_label`)."""
    return f"{names.LABEL_FUNCTION}={names.label_value(function)}"


class Related:
    """Which functions have FunctionVersions or Aliases at all, so that a function with none needs no list.

    Fed by Kopf indexes (the watches of both kinds, keyed by ``(namespace, spec.functionName)``; Kopf fills
    them before any handler runs) plus the versions this process created (seen before their watch event).
    Until the indexes are handed over (:meth:`adopt`), every question goes to the API server.
    """

    def __init__(self) -> None:
        self.indexes: dict[str, Any] = {}
        self._created: set[tuple[str, str, str]] = set()

    def adopt(self, kind: str, index: Any) -> None:
        self.indexes[kind] = index

    def created(self, kind: str, namespace: str, function: str) -> None:
        self._created.add((kind, namespace, function))

    def may_exist(self, kind: str, namespace: str, function: str) -> bool:
        """False only when the index knows that the function has no object of *kind*."""
        index = self.indexes.get(kind)
        return index is None or (namespace, function) in index or (kind, namespace, function) in self._created


RELATED = Related()


def versions_of(namespace: str, function: str) -> list[dict[str, Any]]:
    """Every FunctionVersion of a function (made by kfn or by users), oldest first.

    One label-selected list, not the namespace's every version: a reconcile
    costs the same with 10 or 10,000 functions in the namespace; none when the
    Kopf index knows there is none (:class:`Related`).
    """
    if not RELATED.may_exist(names.FUNCTION_VERSION_KIND, namespace, function):
        return []
    items = k8s.list_objects(names.FUNCTION_VERSION_KIND, namespace, function_selector(function))
    items = [v for v in items if (v.get("spec") or {}).get("functionName") == function]  # long names share hashed labels
    return sorted(items, key=lambda v: _claim_order(function, v))


def _claim_order(function: str, version: Mapping[str, Any]) -> tuple[int, str, bool, str]:
    """Sort key of FunctionVersions: by number, then oldest first.

    creationTimestamp has one-second resolution, so two claimants of one number
    made in the same second tie; kfn's own ``<function>-v<N>`` then wins, so a
    late claimant never takes over the Deployment of the version kfn published.
    """
    number = int((version.get("spec") or {}).get("version") or 0)
    meta = version["metadata"]
    return (number, meta.get("creationTimestamp") or "", meta["name"] != names.version_object_name(function, number),
            meta["name"])


def aliases_of(namespace: str, function: str) -> list[dict[str, Any]]:
    """Every Alias of a function (label-selected, like :func:`versions_of`)."""
    if not RELATED.may_exist(names.ALIAS_KIND, namespace, function):
        return []
    items = k8s.list_objects(names.ALIAS_KIND, namespace, function_selector(function))
    return [a for a in items if (a.get("spec") or {}).get("functionName") == function]


def by_number(versions: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each version number and the FunctionVersion that holds it: the oldest claimant wins.

    *versions* as :func:`versions_of` sorts them. A later FunctionVersion with a
    taken number is refused (``VersionConflict``), so two never fight over one
    Deployment.
    """
    out: dict[str, Mapping[str, Any]] = {}
    for v in versions:
        out.setdefault(str(v["spec"]["version"]), v)
    return out


def ensure_function_label(body: Mapping[str, Any], function: str) -> None:
    """Label a FunctionVersion or Alias with its function, so label-selected lists find it.

    kfn's own versions are born labelled; a user's (from Git) gets the label on
    its first pass. Only metadata changes: a version's spec stays immutable.
    """
    meta = body["metadata"]
    wanted = names.label_value(function)
    if (meta.get("labels") or {}).get(names.LABEL_FUNCTION) == wanted:
        return
    k8s.merge_patch(body["kind"], meta["namespace"], meta["name"], {"metadata": {"labels": {names.LABEL_FUNCTION: wanted}}})


def referenced_versions(aliases: list[Mapping[str, Any]]) -> set[str]:
    """Version numbers some alias points at (never garbage-collected)."""
    out: set[str] = set()
    for a in aliases:
        spec = a.get("spec") or {}
        out.add(str(spec.get("functionVersion")))
        out.update(str(k) for k in ((spec.get("routing") or {}).get("additionalVersionWeights") or {}))
    return out


def versions_to_delete(
    versions: list[Mapping[str, Any]], referenced: set[str], retention: int, owner_uid: str
) -> list[Mapping[str, Any]]:
    """Published versions past the retention setting: kfn-made, unreferenced, and never the newest."""
    if not versions:
        return []
    newest = versions[-1]
    candidates = [
        v
        for v in versions
        if v is not newest
        and str(v["spec"]["version"]) not in referenced
        and any(r.get("uid") == owner_uid for r in v["metadata"].get("ownerReferences") or [])
    ]
    # The newest always stays; when unreferenced it counts towards the retention.
    newest_counts = str(newest["spec"]["version"]) not in referenced
    keep = max(retention - (1 if newest_counts else 0), 0)
    return candidates[: max(len(candidates) - keep, 0)]


def snapshot_name(function: str, version: int) -> str:
    return names.child_name(names.environment_name(function, version), "zip")


def make_function_version(
    body: Mapping[str, Any], number: int, config: dict[str, Any], code_digest: str, config_digest: str, request: int
) -> dict[str, Any]:
    """The FunctionVersion that snapshots $LATEST as version *number*."""
    meta = body["metadata"]
    function = meta["name"]
    spec: dict[str, Any] = {"functionName": function, "version": number, "codeSha256": code_digest, "config": config}
    if config.get("description"):
        spec["description"] = config["description"]
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.FUNCTION_VERSION_KIND,
        "metadata": {
            "name": names.version_object_name(function, number),
            "namespace": meta["namespace"],
            "labels": names.function_labels(function, number),
            "annotations": {names.ANN_PUBLISH_REQUEST: str(request), names.ANN_CONFIG_SHA256: config_digest},
            "ownerReferences": [owner_reference(Owner.of(body))],
        },
        "spec": spec,
    }


def _snapshot_code(body: Mapping[str, Any], number: int, config: dict[str, Any]) -> dict[str, Any]:
    """Copy a zip held in a ConfigMap/Secret into an immutable one of the version's own.

    The user's ConfigMap may change after publishing; the version must not.
    Returns the config with its zip reference pointing at the snapshot.
    """
    z = (config.get("code") or {}).get("zip") or {}
    if "configMapRef" not in z and "secretRef" not in z:
        return config
    meta = body["metadata"]
    ref_kind, field = ("ConfigMap", "configMapRef") if "configMapRef" in z else ("Secret", "secretRef")
    data = read_zip(meta["namespace"], ref_kind, z[field]["name"], z[field]["key"], f"spec.code.zip.{field}")
    name = snapshot_name(meta["name"], number)
    encoded = base64.b64encode(data).decode()
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": ref_kind,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": names.function_labels(meta["name"], number),
            "ownerReferences": [owner_reference(Owner.of(body))],
        },
        "immutable": True,
        ("binaryData" if ref_kind == "ConfigMap" else "data"): {ZIP_KEY: encoded},
    }
    try:
        k8s.create(obj)
    except k8s.Conflict:
        # made by a pass that crashed before creating the version; immutable, so never rewritten
        # (should its zip differ from the version's codeSha256, the version reports CodeChanged)
        log.info("snapshot %s %s/%s exists already", ref_kind, meta["namespace"], name)
    new_zip: dict[str, Any] = {field: {"name": name, "key": ZIP_KEY}}
    if "signature" in z:  # the version is verified again (its codeSigningConfig came with the snapshot)
        new_zip["signature"] = z["signature"]
    return {**config, "code": {"zip": new_zip}}


def pinned_image(image: str, code_digest: str, pods: list[Mapping[str, Any]]) -> str | None:
    """*image* pinned to the digest a running $LATEST environment reports for it, or None if none does yet.

    kfn has no registry client: the node's container runtime resolved the tag when
    it pulled the image, and reports the digest in the pod's
    ``containerStatuses[].imageID`` (``docker.io/org/app@sha256:…``). Only pods of
    the current code count (their ``kfn.dev/code-sha256`` annotation is
    *code_digest*); the runtime may name the image by another tag of the same
    content, so the reported ``image`` is not compared. Pinned references come
    back as they are.
    """
    if "@sha256:" in image:
        return image
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    for pod in pods:
        if ((pod.get("metadata") or {}).get("annotations") or {}).get(names.ANN_CODE_SHA256) != code_digest:
            continue  # an environment of an earlier image, still running during a rollout
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            image_id = cs.get("imageID") or ""
            if cs.get("name") == "function" and "@sha256:" in image_id:
                return f"{repo}@sha256:{image_id.rsplit('@sha256:', 1)[1]}"
    return None


def pin_image(namespace: str, function: str, config: dict[str, Any], code_digest: str) -> dict[str, Any] | None:
    """The config with its code image pinned to a digest (None while no environment reports one)."""
    image = (config.get("code") or {}).get("image")
    if not image or "@sha256:" in image:
        return config
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(function, names.LATEST).items())
    pinned = pinned_image(image, code_digest, k8s.list_objects("Pod", namespace, selector))
    return None if pinned is None else {**config, "code": {**config["code"], "image": pinned}}


def publish_answer(versions: list[dict[str, Any]], request: int) -> cond.Condition | None:
    """The answer to publish request *request* once it has been answered, from the versions themselves: Published
    (the version made for it) or Unchanged (the existing version it was answered by), None if none answered it.

    Kept in the status for as long as ``spec.publish`` stays: every later pass of the Function says it again, so
    the answer is not replaced by "nothing to publish" one pass after it was given (a client polling for it could
    miss it), whatever order concurrent passes write in.
    """
    if request <= 0:
        return None
    for v in reversed(versions):
        annotations = v["metadata"].get("annotations") or {}
        if annotations.get(names.ANN_PUBLISH_REQUEST) == str(request):
            number = int(v["spec"]["version"])
            if annotations.get(names.ANN_PUBLISH_UNCHANGED) == str(request):
                return cond.true(cond.VERSION_PUBLISHED, cond.UNCHANGED, f"version {number} already matches $LATEST")
            return cond.true(cond.VERSION_PUBLISHED, cond.PUBLISHED, f"published version {number}")
    return None


def publish(
    body: Mapping[str, Any], spec: Any, config: dict[str, Any], code_digest: str, versions: list[dict[str, Any]]
) -> tuple[cond.Condition | None, int | None]:
    """Publish a version if one is asked for. Returns the VersionPublished condition and the newest number.

    An image function's version runs ``image@sha256:…``, never a moving tag (Lambda
    resolves the tag when a version is published); until an environment of
    $LATEST reports the digest, publishing waits (:class:`CodeUnavailable`).
    """
    meta = body["metadata"]
    status = body.get("status") or {}
    newest = versions[-1] if versions else None
    newest_number = int(newest["spec"]["version"]) if newest else None
    answered = max((int((v["metadata"].get("annotations") or {}).get(names.ANN_PUBLISH_REQUEST, 0)) for v in versions), default=0)
    requested = spec.publish > answered
    if not requested and not spec.auto_publish:
        if spec.publish == 0 and not versions:
            return None, newest_number
        answer = publish_answer(versions, spec.publish)
        if answer is not None:
            return answer, newest_number
        return cond.true(cond.VERSION_PUBLISHED, cond.NOTHING_TO_PUBLISH, f"newest version: {newest_number}"), newest_number
    pinned = pin_image(meta["namespace"], meta["name"], config, code_digest)
    if pinned is None:
        raise CodeUnavailable(
            cond.false(
                cond.VERSION_PUBLISHED,
                cond.IMAGE_DIGEST_PENDING,
                f"spec.code.image: waiting for an execution environment of $LATEST to report the digest of "
                f"{config['code']['image']}; the version will run that digest, not the tag",
            )
        )
    config = pinned
    code_digest = image_sha256(config["code"]["image"]) if "image" in (config.get("code") or {}) else code_digest
    digest = version_config_sha256(config, code_digest)
    if newest is not None and (newest["metadata"].get("annotations") or {}).get(names.ANN_CONFIG_SHA256) == digest:
        if requested:
            # Record that this request was answered by the existing version (like PublishVersion).
            k8s.merge_patch(
                names.FUNCTION_VERSION_KIND,
                meta["namespace"],
                newest["metadata"]["name"],
                {"metadata": {"annotations": {names.ANN_PUBLISH_REQUEST: str(spec.publish),
                                              names.ANN_PUBLISH_UNCHANGED: str(spec.publish)}}},
            )
        return (
            cond.true(cond.VERSION_PUBLISHED, cond.UNCHANGED, f"version {newest_number} already matches $LATEST"),
            newest_number,
        )
    number = max(int(status.get("latestVersion") or 0), newest_number or 0) + 1
    snapshot = _snapshot_code(body, number, config)
    fv = make_function_version(body, number, snapshot, code_digest, digest, spec.publish)
    RELATED.created(names.FUNCTION_VERSION_KIND, meta["namespace"], meta["name"])  # before its watch event
    try:
        k8s.create(fv)
    except k8s.Conflict:
        log.info("version %s of %s/%s exists already", number, meta["namespace"], meta["name"])
    k8s.post_event(body, "Normal", cond.PUBLISHED, f"published version {number} (code sha256 {code_digest[:12]})")
    return cond.true(cond.VERSION_PUBLISHED, cond.PUBLISHED, f"published version {number}"), number


def collect_garbage(body: Mapping[str, Any], versions: list[dict[str, Any]], aliases: list[dict[str, Any]], retention: int) -> None:
    meta = body["metadata"]
    for v in versions_to_delete(versions, referenced_versions(aliases), retention, meta["uid"]):
        number = int(v["spec"]["version"])
        k8s.delete(names.FUNCTION_VERSION_KIND, meta["namespace"], v["metadata"]["name"])
        for kind in ("ConfigMap", "Secret"):
            k8s.delete(kind, meta["namespace"], snapshot_name(meta["name"], number))
        k8s.post_event(body, "Normal", cond.VERSION_DELETED, f"deleted version {number}: past versionRetention {retention} and no alias points at it")


def url_base() -> str:
    """Where the gateway serves function URLs: ``KFN_URL_BASE`` (the operator's ``--url-base``), else the gateway
    Service of the default install."""
    return os.environ.get("KFN_URL_BASE") or names.DEFAULT_URL_BASE


def _arn(namespace: str, function: str) -> str:
    """The function's unqualified ARN: the namespace's account id, kfn's region (docs/lambda-api.md)."""
    return names.function_arn(names.DEFAULT_REGION, names.account_id(namespace), function)


def reconcile_function(body: Mapping[str, Any], images: Images) -> Outcome:
    """One level-based pass over a Function; writes status and Events."""
    if being_deleted(body):
        return Outcome(skipped=True)
    meta = body["metadata"]
    namespace, function = meta["namespace"], meta["name"]
    try:
        spec = parse_function_spec(body.get("spec") or {})
    except SpecError as e:
        return invalid_spec(body, e, "fix the Function spec")
    config = spec.config().to_api()
    token = (meta.get("annotations") or {}).get(names.ANN_SERVICE_ACCOUNT_TOKEN) == "true"
    outcome = Outcome()
    try:
        digest = code_sha256(namespace, config)
    except CodeUnavailable as e:
        outcome.conditions = [e.condition]
        outcome.retry_after = WAIT_SECONDS
        outcome.status = {"state": "Pending", "functionArn": _arn(namespace, function)}
        outcome.conditions.insert(0, cond.summarize(outcome.conditions))
        return finish(body, outcome)
    aliases = aliases_of(namespace, function)
    inp = EnvironmentInput(
        namespace=namespace,
        function=function,
        version=names.LATEST,
        owner=Owner.of(body),
        spec=config,
        code_sha256=digest,
        images=images,
        provisioned=capped_floor(provisioned_floor(aliases, function, names.LATEST), config.get("reservedConcurrency")),
        service_account_token=token,
        function_scaling=(body.get("spec") or {}).get("scaling") or {},
        previous_scaling=(body.get("status") or {}).get("scaling"),
    )
    children, status, retry = reconcile_signed_environment(inp)
    outcome.conditions = children
    outcome.status = {**status, "codeSha256": digest, "functionArn": _arn(namespace, function),
                      "url": names.function_url(url_base(), namespace, function) if spec.url else None}
    outcome.retry_after = retry
    if any(c.reason == cond.CODE_TOO_LARGE for c in children):
        outcome.permanent = children[0].message

    versions = versions_of(namespace, function)
    try:
        published, newest = publish(body, spec, config, digest, versions)
    except CodeUnavailable as e:
        published, newest = cond.false(cond.VERSION_PUBLISHED, e.condition.reason, e.condition.message), None
        outcome.retry_after = WAIT_SECONDS
    if published is not None:
        outcome.conditions.append(published)
    latest = max(int((body.get("status") or {}).get("latestVersion") or 0), newest or 0)
    if latest:
        outcome.status["latestVersion"] = latest
    if newest is not None and newest > max((int(v["spec"]["version"]) for v in versions), default=0):
        versions = versions_of(namespace, function)  # this pass made a version
    collect_garbage(body, versions, aliases, spec.version_retention)

    serving = cond.summarize(outcome.conditions)
    if spec.reserved_concurrency is not None:
        outcome.conditions.append(reservation_condition(body, spec.reserved_concurrency))
    ready = cond.summarize(outcome.conditions, f"$LATEST serves at {status.get('endpoint', '')}")
    outcome.conditions.insert(0, ready)
    failed = outcome.permanent or outcome.status.get("stateReasonCode")  # no environment can start
    # A refused reservation is not the function's state: it runs (as unreserved), as on Lambda.
    outcome.status["state"] = "Active" if serving.is_true or held_but_serving(outcome.status) else (
        "Failed" if failed else "Pending")
    return finish(body, outcome)


def held_but_serving(status: Mapping[str, Any]) -> bool:
    """An update was refused (LastUpdateStatus Failed) while environments of the previous code still serve: the
    function is Active, as on Lambda after a failed UpdateFunctionCode. Not when the environments themselves fail
    (a stateReasonCode such as an init error: their pods stay Ready so that the next invoke retries the init)."""
    return (status.get("lastUpdateStatus") == "Failed" and int(status.get("readyReplicas") or 0) > 0
            and not status.get("stateReasonCode"))


POOL = "pool"  # the index's one key: every reservation draws on the one pool


def reservation_entry(namespace: str | None, name: str, spec: Mapping[str, Any],
                      meta: Mapping[str, Any]) -> dict[str, rules.Reservation]:
    """A Function's entry in the index of reservations (:data:`RESERVATIONS`): ``{POOL: Reservation}`` when its
    ``spec.reservedConcurrency`` is set, else ``{}`` (Kopf then drops any entry the Function had)."""
    reserved = spec.get("reservedConcurrency")
    if not isinstance(reserved, int):
        return {}
    return {POOL: rules.Reservation(namespace or "", name, reserved, str(meta.get("creationTimestamp") or ""))}


class Reservations:
    """The reservedConcurrency of every Function the operator watches, so that a reconcile checks the pool
    without listing Functions (a list per reconcile of each reserving Function was O(N²) per resync pass).

    Fed by a Kopf index of Functions (:func:`reservation_entry`; Kopf fills it before any handler runs and
    keeps it as the watch goes). Until it is handed over (:meth:`adopt`), :meth:`known` is None and the caller
    lists Functions. Scope: the namespaces the operator watches (every one when cluster-wide), as the scaler
    counts the reservations of the namespaces it serves; a namespaced operator's Role grants no cluster-wide
    list anyway.
    """

    def __init__(self) -> None:
        self.index: Any = None

    def adopt(self, index: Any) -> None:
        self.index = index

    def known(self) -> list[rules.Reservation] | None:
        """Every reservation in the index (None: no index yet, or it kept changing while read)."""
        index = self.index
        for _ in range(3 if index is not None else 0):
            try:
                # Kopf updates the index on the event loop while reconciles run in threads: a copy taken
                # while it changed size is taken again.
                return list(index[POOL]) if POOL in index else []
            except (KeyError, RuntimeError):
                continue
        return None


RESERVATIONS = Reservations()


def listed_reservations() -> list[rules.Reservation]:
    """Every reservation, from a list of all Functions (before the index is handed over). Raises ApiError."""
    out = []
    for f in k8s.list_objects(names.FUNCTION_KIND, None):
        meta = f["metadata"]
        out += reservation_entry(meta.get("namespace"), meta["name"], f.get("spec") or {}, meta).values()
    return out


def reservation_condition(body: Mapping[str, Any], asked: int) -> cond.Condition:
    """ConcurrencyReserved for the Function *body* that reserves *asked*, against the reservations the operator
    knows (:data:`RESERVATIONS`, no request; a list of Functions before the index is handed over).

    The Function's own reservation is taken from *body*, the newest state this pass has of it.
    """
    meta = body["metadata"]
    namespace, function = meta["namespace"], meta["name"]
    pool_size, unreserved_min = rules.pool_from_env()
    reservations = RESERVATIONS.known()
    if reservations is None:
        try:
            reservations = listed_reservations()
        except k8s.ApiError as e:
            return cond.Condition(cond.CONCURRENCY_RESERVED, cond.UNKNOWN, cond.RESERVATION_REFUSED,
                                  f"cannot list Functions to check the pool: {e}")
    own = rules.Reservation(namespace, function, asked, str(meta.get("creationTimestamp") or ""))
    others = [r for r in reservations if (r.namespace, r.function) != (namespace, function)]
    return reservation_decision(own, others, pool_size, unreserved_min)


def reservation_decision(own: rules.Reservation, others: list[rules.Reservation], pool_size: int,
                         unreserved_min: int) -> cond.Condition:
    """ConcurrencyReserved: whether the pool (``KFN_POOL_SIZE``/``KFN_UNRESERVED_MIN``, the scaler's flags) holds
    *own* next to the *others* (kfn.scaler.decide.accepted_reservations: older Functions first), else Lambda's
    PutFunctionConcurrency refusal naming the field and the numbers. Pure."""
    reservations = [own, *others]
    accepted, _ = rules.accepted_reservations(reservations, pool_size, unreserved_min)
    if (own.namespace, own.function) in accepted:
        return cond.true(cond.CONCURRENCY_RESERVED, cond.RECONCILED,
                         f"{own.reserved} execution environments reserved of a pool of {pool_size}")
    elsewhere = sum(r.reserved for r in reservations if (r.namespace, r.function) in accepted)
    return cond.false(cond.CONCURRENCY_RESERVED, cond.RESERVATION_REFUSED,
                      rules.refusal_message(pool_size, unreserved_min, elsewhere, own.reserved))
