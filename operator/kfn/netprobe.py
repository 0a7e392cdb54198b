"""Does this cluster enforce NetworkPolicy? A canary the operator runs once, so status never implies isolation.

NetworkPolicies are only objects unless the network plugin enforces them (kind's kindnet before v0.24, flannel
alone, many laptop clusters do not). The operator's own pod is neither a gateway nor an async worker, so kfn's
ingress policy must stop it from connecting to a function's agent. Once per operator process, when a function
has an execution environment Ready for SETTLE_SECONDS, the operator tries: a connection that is refused or times out proves the
dataplane enforces the policy (``NetworkIsolated=True``); one that succeeds proves it does not
(``NetworkIsolated=False`` and a Warning Event on every Function, instead of implied isolation).

The probe needs the operator inside the pod network: its Deployment passes its pod IP as ``KFN_POD_IP``
(downward API). An operator on a node or outside the cluster (``make run``, tests) is let through as the node
is, so it does not probe and Functions carry no ``NetworkIsolated`` condition.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfn import conditions as cond

log = logging.getLogger("kfn.operator")

POD_IP_ENV = "KFN_POD_IP"
# Probe only a pod Ready for this long: a plugin may enforce a new pod's policy a little after the pod starts
# (kube-router on its next sync, seen on the test bed), and a probe in between would cry "not enforced".
SETTLE_SECONDS = 60.0
CONNECT_TIMEOUT = 2.0  # seconds; a dropped SYN times out, a rejected one is refused at once

NETWORK_ISOLATED, ENFORCED, NOT_ENFORCED = cond.NETWORK_ISOLATED, cond.NETWORK_POLICY_ENFORCED, cond.NETWORK_POLICY_NOT_ENFORCED


@dataclass(frozen=True)
class Verdict:
    """The canary's outcome: whether NetworkPolicy is enforced, and what was tried."""

    enforced: bool
    detail: str


def judge(result: str, target: str) -> Verdict:
    """The verdict from one connection attempt (``connected`` / ``refused`` / ``timeout``) to *target*."""
    if result == "connected":
        return Verdict(False, f"the operator's pod connected to {target}, which kfn's ingress policy admits only "
                              "to gateways and async workers")  # fmt: skip
    return Verdict(True, f"the operator's pod could not connect to {target} ({result}): kfn's ingress policy is enforced")


def condition(verdict: Verdict | None) -> cond.Condition | None:
    """The NetworkIsolated condition a function reports (None before a probe, or when none can run)."""
    if verdict is None:
        return None
    if verdict.enforced:
        return cond.true(NETWORK_ISOLATED, ENFORCED, verdict.detail)
    return cond.false(
        NETWORK_ISOLATED,
        NOT_ENFORCED,
        f"this cluster's network plugin does not enforce NetworkPolicy: {verdict.detail}; kfn's isolation rules "
        "are objects only and connections are not blocked (install a plugin that enforces NetworkPolicy)",
    )


def settled_address(pod: Mapping[str, Any], now: datetime.datetime) -> str | None:
    """The pod's IP when it has been Ready for SETTLE_SECONDS (its policy had time to be enforced), else None."""
    status = pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready" and c.get("status") == "True"), None)
    since = (ready or {}).get("lastTransitionTime")
    if not since or not status.get("podIP"):
        return None
    age = (now - datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
    return str(status["podIP"]) if age >= SETTLE_SECONDS else None


def attempt(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> str:
    """One TCP connection attempt: ``connected``, ``refused`` or ``timeout`` (other failures: ``error: …``)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as e:
        return f"error: {e}"


class Canary:
    """The process's one verdict: probed at most once (a failed attempt, e.g. no route, tries again later)."""

    def __init__(self, pod_ip: str | None) -> None:
        self.pod_ip = pod_ip
        self.verdict: Verdict | None = None
        self._lock = threading.Lock()

    @property
    def can_probe(self) -> bool:
        return bool(self.pod_ip)

    def probe(self, host: str, port: int) -> Verdict | None:
        """Probe *host:port* (a ready function pod's agent) unless a verdict stands; returns the verdict."""
        with self._lock:
            if self.verdict is None and self.can_probe:
                result = attempt(host, port)
                if result.startswith("error"):
                    log.warning("network canary: connecting to %s:%s failed oddly (%s); will try again", host, port, result)
                else:
                    self.verdict = judge(result, f"{host}:{port}")
                    log.info("network canary: %s", self.verdict.detail)
            return self.verdict


CANARY = Canary(os.environ.get(POD_IP_ENV))
