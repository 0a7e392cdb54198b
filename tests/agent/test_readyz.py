"""The agent's readiness endpoint as the operator reads it: the runtime's init error, not only "not ready"."""

from __future__ import annotations

import json

from agentrig import wait_for


def test_readyz_carries_the_runtimes_init_error(rig_factory) -> None:
    rig = rig_factory(timeout=3)
    before = rig.http("GET", "/readyz")
    assert before.status == 503 and not before.body.startswith(b"{"), "starting: no error to report yet"
    rig.start_runtime("broken.handler")  # imports a module that does not exist
    wait_for(lambda: rig.http("GET", "/readyz").body.startswith(b"{"), 20, "the init error reaches /readyz")
    reply = rig.http("GET", "/readyz")
    # Ready or not (ready once the failed init waits for an invocation to retry it, Lambda's rule), the body
    # says what the last init met.
    assert reply.headers["content-type"] == "application/json"
    error = json.loads(reply.body)
    # What awslambdaric posted to /init/error, as Lambda reports it.
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "a_module_that_does_not_exist" in error["errorMessage"]
