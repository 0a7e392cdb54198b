"""What the operator asks of the API server, measured on the real one: the requests a reconcile makes (its
``kfn_kube_api_requests_total`` metric) and what its watches ask the API server to filter.

Each test runs the real ``kfn operator`` process watching only the test's namespace (see test_operator.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_operator import NO_NODE_ARCH, Api, Operator, api, function, wait_until  # noqa: F401

pytestmark = pytest.mark.integration

FUNCTION_LISTS = ("kfn.dev", "functions", "list", "200")
# Every kind of child kfn makes (kfn.handlers.CHILD_KINDS), as kubectl names them, and their labels.
CHILD_KINDS = ("deployments.apps", "services", "serviceaccounts", "configmaps", "networkpolicies.networking.k8s.io")
CHILD_SELECTOR = "app.kubernetes.io/managed-by=kfn,kfn.dev/component=function"


def reserved(api: Api, name: str) -> dict[str, Any] | None:
    """The Function's ConcurrencyReserved condition for its current generation (None until there is one)."""
    return api.condition("function", name, "ConcurrencyReserved")


def test_reserving_functions_are_checked_against_the_pool_without_listing_functions(
        cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, api: Api) -> None:
    # Catches: each reconcile of a Function with reservedConcurrency listed every Function of the cluster to check
    # the pool (N reserving Functions: N lists of N per resync pass), and an index of reservations that would keep
    # a deleted Function's or a dropped reservation (the pool never frees up).
    op = Operator(cluster, namespace, tmp_path)
    op.env = {**op.env, "KFN_POOL_SIZE": "110", "KFN_UNRESERVED_MIN": "100"}  # 10 can be reserved
    op.start()
    try:
        n = 12
        # Applied in this order: creationTimestamps never decrease down the list, and ties sort by name.
        api.apply([function(f"r{i:02d}", reservedConcurrency=1, architecture=NO_NODE_ARCH) for i in range(n)])
        expected = {f"r{i:02d}": "True" if i < 10 else "False" for i in range(n)}

        def converged() -> bool:
            return all((reserved(api, name) or {}).get("status") == s for name, s in expected.items())

        wait_until(converged, 120, "the ten oldest reservations are accepted, the two newest refused")
        assert reserved(api, "r00")["message"] == "1 execution environments reserved of a pool of 110"  # type: ignore[index]
        refused = reserved(api, "r10")
        assert refused is not None and refused["reason"] == "ReservationRefused"
        assert refused["message"] == (
            "spec.reservedConcurrency: Specified ReservedConcurrentExecutions for function decreases account's "
            "UnreservedConcurrentExecution below its minimum value of [100]. (1 asked; the pool has 110, other "
            "functions reserve 10, at most 0 can be reserved)")

        # Idle resync passes: each reconciles every Function; only the pass's own list of Functions may be sent.
        op.wait_resync_passes(1)
        lists, reconciles, passes = op.api_requests().get(FUNCTION_LISTS, 0), op.reconciles(), op.resync_passes()
        op.wait_resync_passes(3)
        lists = op.api_requests().get(FUNCTION_LISTS, 0) - lists
        reconciles, passes = op.reconciles() - reconciles, op.resync_passes() - passes
        print(f"{reconciles:.0f} reconciles of {n} reserving Functions over {passes:.0f} resync passes: "
              f"{lists:.0f} lists of Functions")
        assert reconciles >= 2 * n, "the passes reconciled the Functions"
        assert lists <= passes + 1, f"{lists} lists of Functions in {passes} passes: a list per reconcile"

        # The pool frees up as the index follows the watch: a deletion and a dropped reservation.
        api.kubectl("delete", "function", "r00")
        wait_until(lambda: (reserved(api, "r10") or {}).get("status") == "True", 60, "r10 takes r00's place")
        assert (reserved(api, "r11") or {}).get("status") == "False", "r11 is newer than r10"
        api.kubectl("patch", "function", "r01", "--type=merge", "-p", '{"spec":{"reservedConcurrency":null}}')
        wait_until(lambda: (reserved(api, "r11") or {}).get("status") == "True", 60, "r11 takes r01's place")
    finally:
        op.stop()


def test_a_child_that_loses_kfns_labels_leaves_the_filtered_watch_and_is_put_back_at_once(
        cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path, api: Api) -> None:
    # Catches: child watches not filtered by the API server (no labelSelector on the watch request; Kopf's labels=
    # filter drops other objects only after every one of them was streamed to the operator). With the selector
    # on the request, the API server reports an object that stops matching it as DELETED, so the operator repairs
    # it as a deleted child at once; streamed unfiltered it is a MODIFIED event that the operator's filter drops,
    # left alone until the next resync (an hour away here).
    op = Operator(cluster, namespace, tmp_path, "--resync-seconds", "3600").start()
    try:
        api.apply([function("tagged", architecture=NO_NODE_ARCH)])
        api.wait_ready("function", "tagged")
        children = [(kind, name) for kind in CHILD_KINDS for name in api.names(kind, CHILD_SELECTOR)]
        assert {k for k, _ in children} >= {"deployments.apps", "services", "configmaps"}, children
        for kind, name in children:  # one at a time: each one's own watch event must bring it back
            api.kubectl("label", kind, name, "kfn.dev/component-")

            def labelled(kind: str = kind, name: str = name) -> bool:
                labels = ((api.get(kind, name) or {}).get("metadata") or {}).get("labels") or {}
                return labels.get("kfn.dev/component") == "function"

            wait_until(labelled, 30, f"{kind} {name} gets its kfn.dev/component label back")
    finally:
        op.stop()
