"""Whether a version's execution environments can start, decided from what their pods report.

Lambda reports a function that cannot start as ``State: Failed`` with a
``StateReasonCode`` and the runtime's error (``FunctionError``,
``InvalidImage`` …). kfn reads the same facts from Kubernetes: the pods'
container statuses (image pulls, crash loops, the init container that fetches
the code, each with its termination message) and, for a runtime that is running
but failed its init, the error the runtime posted to the agent's
``/init/error`` (the agent's ``/readyz`` answers it).

Pure functions: the reconciler lists the pods and asks the agent; nothing here
talks to the API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kfn import conditions as cond

# Waiting reasons of a container whose image cannot be had (kubelet's images.ErrImagePull & co).
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                                "ImageInspectError", "RegistryUnavailable"})
# Waiting reasons of a container the kubelet cannot create from its spec (a missing Secret, a bad command).
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
CODE_CONTAINER = "code"  # the init container that brings code and layers (resources/environment.py)
MESSAGE_LIMIT = 600  # characters of a runtime's output kept in a status message


@dataclass(frozen=True)
class Problem:
    """Why no execution environment can start: a condition reason, Lambda's reason code, and the detail."""

    reason: str  # a conditions.py reason constant
    code: str  # Lambda's StateReasonCode / LastUpdateStatusReasonCode
    message: str
    # The update's problem only: environments of the previous code and configuration still serve (Lambda: State
    # stays Active, LastUpdateStatus Failed with this reason code).
    rollout: bool = False

    def condition(self) -> cond.Condition:
        return cond.false(cond.ENVIRONMENTS_HEALTHY, self.reason, self.message)


def _tail(text: str | None) -> str:
    text = " ".join((text or "").split())  # one line: a status message is read in `kubectl get`/describe
    return text if len(text) <= MESSAGE_LIMIT else "…" + text[-MESSAGE_LIMIT:]


def _terminated(term: Mapping[str, Any]) -> str:
    detail = f"exit code {term.get('exitCode')}"
    if term.get("signal"):
        detail += f", signal {term['signal']}"
    if term.get("reason") and term["reason"] not in ("Error", "Completed"):
        detail += f" ({term['reason']})"
    message = _tail(term.get("message"))
    return f"{detail}: {message}" if message else detail


def container_problem(pod_name: str, status: Mapping[str, Any], init: bool = False) -> Problem | None:
    """What keeps one container of a pod from running, from its containerStatus (None if nothing)."""
    name = status.get("name", "?")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    where = f"pod {pod_name}: {'init container' if init else 'container'} {name}"
    reason = waiting.get("reason", "")
    if reason in IMAGE_PULL_REASONS:
        detail = _tail(waiting.get("message"))
        return Problem(cond.IMAGE_PULL_FAILED, "InvalidImage",
                       f"{where}: {reason}: image {status.get('image', '?')} cannot be pulled" + (f": {detail}" if detail else ""))
    if reason in CONFIG_REASONS:
        return Problem(cond.CONTAINER_CONFIG_ERROR, "InvalidConfiguration", f"{where}: {reason}: {_tail(waiting.get('message'))}")
    restarts = status.get("restartCount", 0)
    # Died, and not for the first time (the kubelet keeps a crash-looping container `terminated` for most of
    # its back-off, showing `waiting: CrashLoopBackOff` only now and then); the code init container: at once.
    failed = state.get("terminated") if (state.get("terminated") or {}).get("exitCode") and (init or restarts) else None
    if reason == "CrashLoopBackOff" or failed:
        term = failed or last
        detail = f"CrashLoopBackOff (restarted {restarts} times)" if restarts else "failed"
        if term:
            detail += f"; last {_terminated(term)}"
        if init and name == CODE_CONTAINER:
            return Problem(cond.CODE_FETCH_FAILED, "InvalidZipFileException", f"{where} cannot bring the code: {detail}")
        return Problem(cond.RUNTIME_CRASH_LOOP, "FunctionError", f"{where}: {detail}")
    return None


def pod_problem(pod: Mapping[str, Any]) -> Problem | None:
    """What keeps one pod's execution environment from starting, from the pod's status (None if nothing).

    A pod that is only waiting (scheduling, pulling, starting, a slow init) is not a problem.
    """
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    for s in status.get("initContainerStatuses") or []:
        found = container_problem(name, s, init=True)
        if found:
            return found
    # The function container first: its failure is the runtime's, the one a user must fix.
    statuses = sorted(status.get("containerStatuses") or [], key=lambda s: s.get("name") != "function")
    for s in statuses:
        found = container_problem(name, s)
        if found:
            return found
    return None


def awaiting_init(pod: Mapping[str, Any]) -> bool:
    """A pod whose containers all run but which is not ready: its runtime is initialising, or failed to."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    statuses = status.get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses) and not all(
        s.get("ready") for s in statuses
    )


def is_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True (the Service routes invocations to it)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def init_error_problem(pod_name: str, readyz_status: int, body: bytes) -> Problem | None:
    """The runtime's init error, from the agent's ``/readyz`` answer: its body is the last init's /init/error
    payload (JSON) whenever that init failed, ready or not (ready: the next invocation retries the init)."""
    if readyz_status not in (200, 503):
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # initialising, or initialised: the agent says so in plain text
    if not isinstance(doc, dict):
        return None
    error_type = doc.get("errorType") or "Unhandled"
    message = _tail(str(doc.get("errorMessage") or ""))
    return Problem(cond.RUNTIME_INIT_ERROR, "FunctionError.RuntimeInitError",
                   f"pod {pod_name}: the runtime's init failed: {error_type}: {message}")


def newest(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest pod not being deleted: it runs the current code and configuration (a rollout's new
    pods are younger than the old ones, and a crash loop restarts containers, not pods)."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return max(live, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)


def environments_problem(pods: Iterable[Mapping[str, Any]]) -> Problem | None:
    """The newest pod's problem, from its status (init errors need the agent: see init_error_problem)."""
    pod = newest(pods)
    return pod_problem(pod) if pod is not None else None
