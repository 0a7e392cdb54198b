"""The preStop drain (scale-down): the environment stops taking invocations and turns not-ready at once, and the
hook is answered only once the running invocation has finished (so the kubelet's SIGTERM never cuts it off)."""

from __future__ import annotations

import threading
import time

from agentrig import wait_for


def test_drain_waits_for_the_running_invocation_and_refuses_new_ones(rig_factory) -> None:
    rig = rig_factory(timeout=5)
    rig.start_runtime("app.dispatch")
    wait_for(rig.ready, 20, "the runtime's first /next (readyz)")
    running: dict = {}
    t = threading.Thread(target=lambda: running.update(r=rig.invoke({"op": "sleep", "seconds": 1.5})))
    t.start()
    wait_for(lambda: any(line.startswith("START") for line in rig.platform_lines()), 5, "the invocation runs")
    drained: dict = {}
    started = time.monotonic()
    d = threading.Thread(target=lambda: drained.update(r=rig.http("GET", "/kfn/drain", timeout=10)))
    d.start()
    wait_for(lambda: rig.http("GET", "/readyz").status == 503, 2, "readiness turns false at once")
    refused = rig.invoke({"op": "echo"})
    assert refused.status == 429 and refused.headers["x-kfn-environment-busy"] == "true"  # the gateway goes elsewhere
    d.join()
    t.join()
    assert running["r"].status == 200 and running["r"].json() == {"slept": True}  # not cut off
    assert drained["r"].status == 200
    assert time.monotonic() - started >= 0.5, "the hook is answered only after the invocation ended"
