"""Lag reporting end to end: a Redis stream mapping's backlog reaches a real ``kfn scaler`` as demand for the function,
from the real poller pod (the rig of esmrig, with a host scaler the gateway and the pollers push to).

The bug each test catches: a function fed by a stream that the scaler does not see until invocations are already
running (no lag in its demand), or that keeps asking for environments once the stream is drained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from esmrig import POLLER_START_SECONDS, World, open_world, wait_until

pytestmark = pytest.mark.e2e

SLOW = "import time\n\ndef handler(event, context):\n    time.sleep(1)\n    return {'n': len(event['Records'])}\n"
LANES = 4  # parallelizationFactor: the poller runs up to 4 batches of the stream at once


@pytest.fixture(scope="module")
def lag_world(cluster: Any, crds_installed: Any, testbed_images: Any, tmp_path_factory: pytest.TempPathFactory,
              ) -> Iterator[World]:
    # burst 4 then +1/s, idle 5 s: small, the node is shared
    with open_world(cluster, tmp_path_factory.mktemp("esm-lag"), scaler_args=(
            "--burst-size", "4", "--burst-rate", "1", "--idle-seconds", "5", "--tick", "0.2")) as w:
        yield w


def scaler_gauge(w: World, name: str, function: str) -> float | None:
    assert w.scaler is not None
    pattern = re.compile(rf'^{name}\{{(?=[^}}]*namespace="{w.ns}")(?=[^}}]*function="{function}")'
                         rf'(?=[^}}]*version="\$LATEST")[^}}]*\}} (\S+)$', re.M)
    m = pattern.search(w.scaler.metrics())
    return float(m.group(1)) if m else None


def replicas(w: World, deployment: str) -> int:
    d = w.api.get("deployment", deployment)
    return int(((d or {}).get("spec") or {}).get("replicas") or 0)


def test_a_backlog_is_demand_before_anything_runs_and_scales_the_function_out(lag_world: World) -> None:
    w = lag_world
    # reserved concurrency 0: every invocation is throttled, so nothing runs and the gateway reports nothing; the
    # only demand the scaler can see is the poller's lag
    w.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "slow"},
                  "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 10,
                           "reservedConcurrency": 0, "code": {"inline": {"files": {"app.py": SLOW}}}}}])
    client = w.client()
    pipe = client.pipeline(transaction=False)
    for i in range(400):
        pipe.xadd("lagged", {"data": json.dumps({"n": i}), "partitionKey": f"k{i % 16}"})
    pipe.execute()
    spec = w.mapping("lagged", "lagged", batchSize=10, parallelizationFactor=LANES)
    spec["spec"]["functionName"] = "slow"
    w.api.apply([spec])

    try:
        wait_until(lambda: scaler_gauge(w, "kfn_scaler_demand", "slow") == LANES, POLLER_START_SECONDS,
                   f"the scaler sees the backlog as {LANES} environments of demand (one per lane)", interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w.diagnose()}") from None
    # the reservation still rules what the scaler does with it
    assert scaler_gauge(w, "kfn_scaler_desired_environments", "slow") in (None, 0.0)
    assert replicas(w, "slow-latest") == 0

    # the reservation lifted: the scaler grows the function past one environment for the backlog, which drains
    w.api.kubectl("patch", "function", "slow", "--type=merge", "-p", '{"spec":{"reservedConcurrency":null}}')
    wait_until(lambda: replicas(w, "slow-latest") > 1, 120, "the scaler wants more than one environment",
               interval=0.5)

    def drained() -> bool:
        groups = {g["name"].decode(): g for g in client.xinfo_groups("lagged")}
        g = groups.get("kfn")
        return bool(g) and g.get("lag") == 0 and not g.get("pending")

    wait_until(drained, POLLER_START_SECONDS, "the stream is drained", interval=1)
    # a drained stream is no demand: the poller's report says 0 (not stale), the gateway has nothing in flight
    wait_until(lambda: scaler_gauge(w, "kfn_scaler_demand", "slow") in (None, 0.0), 30,
               "the drained stream's demand is gone", interval=0.5)
