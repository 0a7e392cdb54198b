"""``spec.architecture``: can an execution environment of this architecture be scheduled at all?

A Function's ``architecture`` (``amd64`` | ``arm64``, Lambda's ``Architectures: ["x86_64"]`` | ``["arm64"]``)
becomes the pods' ``nodeSelector`` on ``kubernetes.io/arch`` (kfn.resources.environment). When no schedulable node
carries that label, the pods stay Pending and nothing else says why; this module turns the cluster's nodes into the
``Schedulable`` condition every Function and FunctionVersion reports (docs/architectures.md):

* ``Schedulable=True`` reason ``NodesAvailable``: some Ready, uncordoned node has ``kubernetes.io/arch=<arch>``;
* ``Schedulable=False`` reason ``NoNodeForArchitecture``: none has, and the message names the label and the
  architectures the cluster does have.

The condition is informational: it does not gate ``Ready`` nor turn ``state`` into ``Failed``. On Kubernetes a
node of the missing architecture may join at any time (an arm64 node pool scaling up from zero) and the Pending
pods then schedule with no change to the Function; and a node leaving must never take down environments that
already serve (their pods keep running wherever they are). The Warning Event on the transition and the condition
are what tell the user. The resync loop re-reads the verdict, so the condition follows nodes joining and leaving.

Nodes are cluster-scoped: the check runs only where the operator may ``list nodes`` — cluster-wide operators
(their ClusterRole grants it, kfn.resources.rbac) or when told with ``kfn operator --check-node-architecture``.
A namespaced operator has no cluster-wide grant, so by default it reports no ``Schedulable`` condition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from kfn import conditions as cond
from kfn import k8s

log = logging.getLogger("kfn.operator")

ARCH_LABEL = "kubernetes.io/arch"  # the well-known node label the kubelet sets from GOARCH
# How long one read of the nodes answers for every Function (seconds): nodes change rarely, Functions are many.
TTL_SECONDS = 10.0

NodeCounts = Mapping[str, Mapping[str, int]]  # arch -> {"schedulable": n, "unschedulable": n} (k8s.node_architectures)


def schedulable_condition(architecture: str, nodes: NodeCounts) -> cond.Condition:
    """``Schedulable`` for a Function of *architecture* on a cluster with *nodes* (k8s.node_architectures' shape).

    >>> schedulable_condition("arm64", {"amd64": {"schedulable": 1, "unschedulable": 0}}).message
    'no schedulable node has kubernetes.io/arch=arm64 (the cluster has: amd64 1); the environments stay Pending until one joins'
    """
    counts = nodes.get(architecture) or {}
    have = counts.get("schedulable", 0)
    if have:
        return cond.true(cond.SCHEDULABLE, cond.NODES_AVAILABLE,
                         f"{have} schedulable node{'s' if have != 1 else ''} with {ARCH_LABEL}={architecture}")
    others = ", ".join(f"{arch or '(no label)'} {c.get('schedulable', 0)}" for arch, c in sorted(nodes.items())
                       if c.get("schedulable", 0))
    down = counts.get("unschedulable", 0)
    detail = f"; {down} such node{'s are' if down != 1 else ' is'} NotReady or cordoned" if down else ""
    return cond.false(cond.SCHEDULABLE, cond.NO_NODE_FOR_ARCHITECTURE,
                      f"no schedulable node has {ARCH_LABEL}={architecture} (the cluster has: {others or 'none'})"
                      f"{detail}; the environments stay Pending until one joins")


class NodeArchitectures:
    """The cluster's nodes per architecture, read at most once per *ttl* seconds for all reconciles (thread-safe).

    Off until :meth:`enable` (the operator's ``--check-node-architecture``); :meth:`condition` then gives the
    ``Schedulable`` condition, or None when off or when the nodes could not be read yet (logged, tried again on
    the next call after *ttl*: a refused or failed read never blocks a reconcile).
    """

    def __init__(self, read: Callable[[], NodeCounts] | None = None, ttl: float = TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._nodes: NodeCounts | None = None
        self._read_at = float("-inf")

    def enable(self, read: Callable[[], NodeCounts]) -> None:
        self._read = read

    def nodes(self) -> NodeCounts | None:
        """The last read of the nodes, read again when older than the TTL; None if never read successfully."""
        if self._read is None:
            return None
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._ttl:
                self._read_at = now  # one attempt per TTL, also when it fails: no retry storm on a 403
                try:
                    self._nodes = self._read()
                except k8s.ApiError as e:  # refused (403) or unreachable: only delays the condition
                    log.warning("cannot read the nodes' architectures (Schedulable not reported): %s", e)
            return self._nodes

    def condition(self, architecture: str) -> cond.Condition | None:
        nodes = self.nodes()
        return None if nodes is None else schedulable_condition(architecture, nodes)


NODES = NodeArchitectures()  # the operator's one view (enabled by kfn.cli.operator)
