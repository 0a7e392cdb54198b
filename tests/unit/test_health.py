"""Whether a version's execution environments can start, from pod statuses as the kubelet writes them."""

from __future__ import annotations

import json

import pytest

from kfn import conditions as cond
from kfn import health


def pod(name="fn-latest-abc", phase="Running", containers=(), init=(), created="2026-11-29T08:00:00Z", deleting=False):
    meta = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = created
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": list(containers),
                                         "initContainerStatuses": list(init)}}


def running(name, ready=True):
    return {"name": name, "ready": ready, "restartCount": 0, "image": f"kfn/{name}", "state": {"running": {}}}


def waiting(name, reason, message="", last=None, restarts=0, image="docker.io/kfn/nope:1"):
    s = {"name": name, "ready": False, "restartCount": restarts, "image": image,
         "state": {"waiting": {"reason": reason, "message": message}}}
    if last:
        s["lastState"] = {"terminated": last}
    return s


PULL_MESSAGE = 'Back-off pulling image "docker.io/kfn/nope:1": ErrImagePull: failed to pull and unpack image'


@pytest.mark.parametrize(
    ("status", "reason", "code", "words"),
    [
        (pod(phase="Pending", containers=[running("agent", False), waiting("function", "ImagePullBackOff", PULL_MESSAGE)]),
         cond.IMAGE_PULL_FAILED, "InvalidImage", ["container function", "ImagePullBackOff", "ErrImagePull", "docker.io/kfn/nope:1"]),
        (pod(phase="Pending", containers=[running("agent", False), waiting("function", "ErrImagePull", "not found")]),
         cond.IMAGE_PULL_FAILED, "InvalidImage", ["ErrImagePull", "not found"]),
        (pod(containers=[running("agent", False), waiting("function", "CrashLoopBackOff", "back-off 20s", restarts=3,
                                                           last={"exitCode": 3, "reason": "Error", "message": "runtime crashed: boom\n"})]),
         cond.RUNTIME_CRASH_LOOP, "FunctionError", ["container function", "CrashLoopBackOff", "restarted 3 times", "exit code 3",
                                                   "runtime crashed: boom"]),
        (pod(containers=[running("agent", False), waiting("function", "CrashLoopBackOff", restarts=2,
                                                           last={"exitCode": 137, "reason": "OOMKilled"})]),
         cond.RUNTIME_CRASH_LOOP, "FunctionError", ["exit code 137 (OOMKilled)"]),
        # Between restarts the kubelet (1.35) shows the dead container as terminated, not waiting.
        (pod(containers=[running("agent", False), {"name": "function", "ready": False, "restartCount": 4, "state": {
            "terminated": {"exitCode": 3, "reason": "Error", "message": "runtime crashed: boom"}}}]),
         cond.RUNTIME_CRASH_LOOP, "FunctionError", ["CrashLoopBackOff (restarted 4 times)", "exit code 3", "runtime crashed: boom"]),
        (pod(phase="Pending", init=[{"name": "code", "ready": False, "restartCount": 0, "state": {"terminated": {
            "exitCode": 1, "reason": "Error", "message": "spec.code.zip.url http://x/c.zip: the zip has sha256 aa, but the spec expects bb; refusing it"}}}],
             containers=[waiting("agent", "PodInitializing"), waiting("function", "PodInitializing")]),
         cond.CODE_FETCH_FAILED, "InvalidZipFileException", ["init container code", "sha256 aa", "expects bb"]),
        (pod(phase="Pending", init=[waiting("code", "CrashLoopBackOff", restarts=4, last={"exitCode": 1, "message": "cannot fetch"})],
             containers=[waiting("agent", "PodInitializing"), waiting("function", "PodInitializing")]),
         cond.CODE_FETCH_FAILED, "InvalidZipFileException", ["cannot fetch", "restarted 4 times"]),
        (pod(phase="Pending", containers=[running("agent", False),
                                          waiting("function", "CreateContainerConfigError", 'secret "db" not found')]),
         cond.CONTAINER_CONFIG_ERROR, "InvalidConfiguration", ['secret "db" not found']),
    ],
)
def test_a_pod_that_cannot_start_says_why(status, reason, code, words):
    problem = health.environments_problem([status])
    assert problem is not None
    assert (problem.reason, problem.code) == (reason, code)
    for w in words:
        assert w in problem.message
    c = problem.condition()
    assert (c.type, c.status, c.reason) == (cond.ENVIRONMENTS_HEALTHY, "False", reason)


@pytest.mark.parametrize(
    "status",
    [
        pod(phase="Pending"),  # not scheduled yet (or cannot be: capacity is not the function's fault)
        pod(phase="Pending", containers=[waiting("agent", "ContainerCreating"), waiting("function", "ContainerCreating")]),
        pod(containers=[running("agent", False), running("function")]),  # initialising
        pod(containers=[running("agent"), running("function")]),
        # restarted once after a timeout's reset, running again: not a crash loop
        pod(containers=[running("agent"), {**running("function"), "restartCount": 1,
                                           "lastState": {"terminated": {"exitCode": 137}}}]),
        pod(containers=[running("agent", False), waiting("function", "CrashLoopBackOff")], deleting=True),
        # died once (e.g. killed by the agent's reset after a timeout): the kubelet restarts it at once
        pod(containers=[running("agent"), {"name": "function", "ready": False, "restartCount": 0,
                                           "state": {"terminated": {"exitCode": 137}}}]),
    ],
)
def test_a_pod_that_is_only_starting_is_no_problem(status):
    assert health.environments_problem([status]) is None


def test_the_newest_pod_speaks_for_the_version():
    old = pod("old", created="2026-11-29T08:00:00Z", containers=[waiting("function", "ImagePullBackOff", PULL_MESSAGE)])
    new = pod("new", created="2026-11-29T09:00:00Z",
              containers=[waiting("function", "CrashLoopBackOff", restarts=1, last={"exitCode": 2})])
    assert health.environments_problem([old, new]).message.startswith("pod new:")
    # A fixed version rolling out: its new pod is starting; the old one's problem is history.
    starting = pod("starting", created="2026-11-29T10:00:00Z", containers=[running("agent", False), running("function")])
    assert health.environments_problem([old, new, starting]) is None


def test_long_runtime_output_is_cut_to_its_end_on_one_line():
    text = "line\n" * 50 + "x" * 1000 + "\nTHE END"
    p = health.environments_problem([pod(containers=[waiting("function", "CrashLoopBackOff", restarts=5,
                                                             last={"exitCode": 1, "message": text})])])
    assert p.message.endswith("THE END") and "\n" not in p.message
    assert len(p.message) < health.MESSAGE_LIMIT + 200


def test_ready_is_the_pods_ready_condition():
    ready = pod(containers=[running("agent"), running("function")])
    ready["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert health.is_ready(ready)
    assert not health.is_ready(pod(containers=[running("agent", False), running("function")]))


def test_awaiting_init_is_a_running_pod_that_is_not_ready():
    assert health.awaiting_init(pod(containers=[running("agent", False), running("function")]))
    assert not health.awaiting_init(pod(containers=[running("agent"), running("function")]))
    assert not health.awaiting_init(pod(phase="Pending", containers=[waiting("function", "ContainerCreating")]))


def test_the_agents_init_error_becomes_the_problem():
    body = json.dumps({"errorMessage": "Unable to import module 'app': No module named 'nope'",
                       "errorType": "Runtime.ImportModuleError", "stackTrace": []}).encode()
    p = health.init_error_problem("fn-latest-abc", 503, body)
    assert (p.reason, p.code) == (cond.RUNTIME_INIT_ERROR, "FunctionError.RuntimeInitError")
    assert p.message == ("pod fn-latest-abc: the runtime's init failed: Runtime.ImportModuleError: "
                         "Unable to import module 'app': No module named 'nope'")
    # Ready while the failed init waits for an invocation to retry it (Lambda's rule): still the version's error.
    assert health.init_error_problem("fn-latest-abc", 200, body) == p
    assert health.init_error_problem("p", 503, b"runtime not initialised\n") is None  # still initialising
    assert health.init_error_problem("p", 200, b"ok\n") is None


def test_lambda_update_status_follows_the_rollout_and_failures():
    from kfn.reconcilers.environment import lambda_update_status

    rolled = cond.true(cond.DEPLOYMENT_READY, cond.ROLLED_OUT)
    rolling = cond.true(cond.DEPLOYMENT_READY, cond.ROLLING_OUT)
    broken = cond.false(cond.DEPLOYMENT_READY, cond.DEPLOYMENT_FAILED, "progress deadline exceeded")
    problem = health.Problem(cond.IMAGE_PULL_FAILED, "InvalidImage", "pod p: container function: ErrImagePull")
    cleared = {"lastUpdateStatusReason": None, "lastUpdateStatusReasonCode": None, "stateReasonCode": None,
               "stateReason": None}
    assert lambda_update_status(rolled, None) == {"lastUpdateStatus": "Successful", **cleared}
    assert lambda_update_status(rolling, None)["lastUpdateStatus"] == "InProgress"
    assert lambda_update_status(broken, None) == {
        **cleared, "lastUpdateStatus": "Failed", "lastUpdateStatusReason": "progress deadline exceeded"}
    # No environment can start: the state's reason and the update's.
    assert lambda_update_status(rolled, problem) == {
        "lastUpdateStatus": "Failed", "stateReasonCode": "InvalidImage", "stateReason": problem.message,
        "lastUpdateStatusReasonCode": "InvalidImage", "lastUpdateStatusReason": problem.message}


def test_an_update_that_cannot_start_while_the_old_environments_serve_fails_the_update_only():
    """Bug caught: a broken rollout behind serving pods was reported Successful/InProgress (or, the other way,
    turned a serving function Failed). Lambda: State Active, LastUpdateStatus Failed with the reason code."""
    from dataclasses import replace

    from kfn.reconcilers.environment import lambda_update_status

    rolling = cond.true(cond.DEPLOYMENT_READY, cond.ROLLING_OUT)
    problem = replace(health.Problem(cond.IMAGE_PULL_FAILED, "InvalidImage", "pod p: ErrImagePull"), rollout=True)
    assert lambda_update_status(rolling, problem) == {
        "lastUpdateStatus": "Failed", "lastUpdateStatusReasonCode": "InvalidImage",
        "lastUpdateStatusReason": "pod p: ErrImagePull", "stateReasonCode": None, "stateReason": None}
