"""Reconcile an EventSourceMapping: apply its poller (ServiceAccount, Role, RoleBinding, Deployment), report state.

Status (Lambda's GetEventSourceMapping): ``state`` Creating → Enabled, Disabling → Disabled, Enabling → Enabled,
Updating → Enabled after a spec change, with ``stateTransitionReason`` ``USER_INITIATED`` (the user's spec made
every transition kfn reports); ``lastProcessingResult`` is written by the poller itself. Conditions: ``Ready``
(the mapping is in the state its spec asks for), ``DeploymentReady``, and ``SourceReachable`` — False with the
source's address and the client's error while the poller cannot reach it (derived from the poller's
``lastProcessingResult``; the operator writes every condition, the poller none).

While a transition is under way the pass asks to run again shortly (the poller Deployment is not among the child
watches, which select function children).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kfn import conditions as cond
from kfn import k8s
from kfn.models.base import SpecError
from kfn.models.esm import parse_event_source_mapping_spec
from kfn.reconcilers.common import Outcome, being_deleted, finish, invalid_spec
from kfn.resources.esm import PollerSettings, build_poller, poller_name
from kfn.sources import filters, schedule

SOURCE_REACHABLE = "SourceReachable"
SOURCE_UNREACHABLE = "SourceUnreachable"
NO_CONNECTION_PROBLEM = "NoConnectionProblem"
DEPLOYMENT_READY = cond.DEPLOYMENT_READY
USER_INITIATED = "USER_INITIATED"
TRANSITION_POLL_SECONDS = 3.0
_UNREACHABLE = re.compile(r"^PROBLEM: (?P<address>.+?) unreachable: (?P<error>.*)$", re.S)


def state_of(enabled: bool, deployment: Mapping[str, Any] | None, previous: str | None, generation: int | None,
             ) -> str:
    """Lambda's ``State`` from the spec's ``enabled``, the poller Deployment as read, and the state reported before.

    Enabled once the one poller of the current spec is ready; Disabled once no poller pod remains.
    """
    status = (deployment or {}).get("status") or {}
    current = (deployment or {}).get("metadata", {}).get("generation") == status.get("observedGeneration")
    if not enabled:
        return "Disabled" if current and not status.get("replicas") else "Disabling"
    if current and status.get("readyReplicas") == 1 and status.get("updatedReplicas") == 1 \
            and status.get("replicas") == 1:
        return "Enabled"
    if previous in (None, "Creating"):
        return "Creating"
    if previous in ("Disabled", "Disabling", "Enabling"):
        return "Enabling"
    return "Updating"


def source_condition(last_processing_result: str | None) -> cond.Condition:
    """``SourceReachable`` from the poller's last result (``PROBLEM: <address> unreachable: <error>``)."""
    m = _UNREACHABLE.match(last_processing_result or "")
    if m:
        return cond.false(SOURCE_REACHABLE, SOURCE_UNREACHABLE,
                          f"cannot reach {m.group('address')}: {m.group('error')}; the poller retries with backoff "
                          "and consumes nothing meanwhile")
    return cond.true(SOURCE_REACHABLE, NO_CONNECTION_PROBLEM, "the poller reports no connection problem")


def source_condition_stale(status: Mapping[str, Any] | None) -> bool:
    """Whether the status' ``SourceReachable`` disagrees with its ``lastProcessingResult`` (a pass would fix it)."""
    status = status or {}
    want = source_condition(status.get("lastProcessingResult"))
    have = cond.find(status.get("conditions"), SOURCE_REACHABLE)
    return have is None or (have.get("status"), have.get("message")) != (want.status, want.message)


def validate(spec: Any) -> None:
    """What admission cannot check: filter patterns, schedule expressions and a schedule's ``input`` (a JSON document
    held as a string: EventBridge's target ``Input`` is valid JSON text, and the poller parses it at every tick);
    raises ValueError subclasses whose message names the field."""
    filters.parse([f.pattern for f in spec.filter_criteria.filters] if spec.filter_criteria else [])
    if spec.source.schedule is not None:
        schedule.Schedule(spec.source.schedule.expression, spec.source.schedule.timezone)
        if spec.source.schedule.input is not None:
            try:
                json.loads(spec.source.schedule.input)
            except json.JSONDecodeError as e:
                raise ValueError(f"spec.source.schedule.input: must be a JSON document in a string, e.g. "
                                 f"'{{\"job\": \"nightly\"}}' ({e})") from e


def reconcile_esm(body: Mapping[str, Any], settings: PollerSettings) -> Outcome:
    """One level-based pass over an EventSourceMapping; writes status and Events."""
    if being_deleted(body):
        return Outcome(skipped=True)  # its poller goes with it (owner references)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        spec = parse_event_source_mapping_spec(body.get("spec") or {})
        validate(spec)
    except (SpecError, ValueError) as e:
        return invalid_spec(body, e, "fix the EventSourceMapping spec", state=None)
    for child in build_poller(body, settings):
        k8s.apply(child)
    deployment = k8s.get("Deployment", namespace, poller_name(name))
    old = body.get("status") or {}
    state = state_of(spec.enabled, deployment, old.get("state"), meta.get("generation"))
    settled = state in ("Enabled", "Disabled")
    dep_status = (deployment or {}).get("status") or {}
    deployment_condition = (
        cond.true(DEPLOYMENT_READY, cond.ROLLED_OUT, f"poller {poller_name(name)}: "
                  f"{dep_status.get('readyReplicas') or 0}/{1 if spec.enabled else 0} ready")
        if settled else
        cond.false(DEPLOYMENT_READY, cond.ROLLING_OUT, f"poller {poller_name(name)}: {state.lower()}"))
    source = source_condition(old.get("lastProcessingResult")) if spec.enabled else cond.unknown(
        SOURCE_REACHABLE, "Disabled", "the mapping is disabled: nothing reads the source")
    ready = cond.true(cond.READY, cond.READY_REASON, f"{state}") if settled else cond.false(
        cond.READY, cond.CHILD_NOT_READY, f"{state}: waiting for the poller")
    status: dict[str, Any] = {"state": state}
    if state != old.get("state"):
        status["stateTransitionReason"] = USER_INITIATED
    outcome = Outcome(conditions=[ready, deployment_condition, source], status=status,
                      retry_after=None if settled else TRANSITION_POLL_SECONDS)
    return finish(body, outcome)
