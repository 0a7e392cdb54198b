"""The network canary's decisions (kfn.netprobe); the probe itself runs in tests/e2e/test_network_isolation.py.

Bugs caught: a cluster that lets the operator's pod into a function reported as isolated; a NetworkIsolated
condition that gates Ready (a cluster without enforcement would make every function unusable); an operator
outside the pod network (let through as the node is) probing and then claiming "not enforced".
"""

from __future__ import annotations

import socket

from kfn import conditions as cond
from kfn.netprobe import Canary, attempt, condition, judge


def test_a_connection_means_not_enforced_and_says_what_to_do() -> None:
    c = condition(judge("connected", "198.18.0.7:8080"))
    assert c is not None and c.status == "False" and c.reason == "NetworkPolicyNotEnforced"
    assert "198.18.0.7:8080" in c.message and "does not enforce NetworkPolicy" in c.message


def test_refused_or_timed_out_means_enforced() -> None:
    for result in ("refused", "timeout"):
        c = condition(judge(result, "198.18.0.7:8080"))
        assert c is not None and c.status == "True" and c.reason == "NetworkPolicyEnforced"


def test_no_verdict_no_condition() -> None:
    assert condition(None) is None


def test_the_condition_never_gates_ready() -> None:
    not_enforced = condition(judge("connected", "x:1"))
    assert not_enforced is not None
    ready = cond.summarize([cond.true(cond.DEPLOYMENT_READY, cond.ROLLED_OUT), not_enforced])
    assert ready.is_true


def test_an_operator_outside_the_pod_network_does_not_probe() -> None:
    canary = Canary(pod_ip=None)
    assert canary.probe("127.0.0.1", 9) is None and canary.verdict is None


def test_one_probe_per_process_against_a_real_socket() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        canary = Canary(pod_ip="10.0.0.5")
        first = canary.probe("127.0.0.1", port)
        assert first is not None and not first.enforced
        server.close()
        assert attempt("127.0.0.1", port) == "refused"
        assert canary.probe("127.0.0.1", port) is first  # the verdict stands
    finally:
        server.close()


def test_only_a_pod_settled_in_ready_is_probed() -> None:
    import datetime

    from kfn.netprobe import SETTLE_SECONDS, settled_address

    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)

    def pod(ready_since: datetime.datetime, status: str = "True") -> dict[str, object]:
        stamp = ready_since.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"status": {"podIP": "198.18.0.9", "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": stamp}]}}

    assert settled_address(pod(now - datetime.timedelta(seconds=SETTLE_SECONDS)), now) == "198.18.0.9"
    assert settled_address(pod(now - datetime.timedelta(seconds=5)), now) is None  # its policy may not be enforced yet
    assert settled_address(pod(now - datetime.timedelta(hours=1), status="False"), now) is None
    assert settled_address({"status": {}}, now) is None
