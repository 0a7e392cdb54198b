"""Builders of a version's children: what a user would find in the cluster."""

from __future__ import annotations

import copy

import pytest

from kfn import conditions as cond
from kfn import names
from kfn.models import SpecError
from kfn.models.admission import admission_errors
from kfn.models.function import parse_function_spec
from kfn.resources import EnvironmentInput, Images, Owner, build_environment
from kfn.resources.code import CodeError, inline_sha256, image_sha256
from kfn.resources.environment import cpu_millicores

OWNER = Owner("kfn.dev/v1alpha1", "Function", "hello", "uid-1")
BASE = {
    "runtime": "python3.11",
    "handler": "app.handler",
    "code": {"inline": {"files": {"app.py": "def handler(e, c):\n    return e\n", "lib/util.py": "X = 1\n"}}},
    "memoryMB": 1769,
    "timeoutSeconds": 30,
    "ephemeralStorageMB": 1024,
    "architecture": "arm64",
    "environment": {"variables": {"STAGE": "prod"}, "secretRefs": [{"name": "db"}]},
}


def env_input(spec=None, version="$LATEST", **kw) -> EnvironmentInput:
    return EnvironmentInput("ns", "hello", version, OWNER, spec or BASE, "sha", **kw)


def children(spec=None, version="$LATEST", **kw):
    return build_environment(env_input(spec, version, **kw))


def deployment(spec=None, **kw):
    return children(spec, **kw)[cond.DEPLOYMENT_READY][0]


def container(dep, name):
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c):
    return {e["name"]: e.get("value") for e in c["env"]}


def test_every_child_is_owned_labelled_and_named_for_the_version():
    objs = [o for group in children().values() for o in group]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "NetworkPolicy", "Service", "ServiceAccount"]
    for o in objs:
        meta = o["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["labels"]["kfn.dev/function"] == "hello"
        assert meta["labels"]["kfn.dev/version"] == "latest"
        assert meta["ownerReferences"][0]["uid"] == "uid-1"
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["name"].startswith("hello-latest")


def test_deployment_leaves_replicas_to_the_scaler():
    assert "replicas" not in deployment()["spec"]


def test_pod_contract_agent_and_function_containers():
    dep = deployment()
    pod = dep["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert pod["terminationGracePeriodSeconds"] > 30
    agent = container(dep, "agent")
    assert agent["image"] == "kfn/kfn:dev" and agent["command"] == ["kfn", "agent"]
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    # The runtime starts after the agent's Runtime API listens (the kubelet waits for postStart, in order).
    assert [c["name"] for c in pod["containers"]] == ["agent", "function"]
    assert "127.0.0.1\", 9001" in agent["lifecycle"]["postStart"]["exec"]["command"][-1]
    fn = container(dep, "function")
    assert fn["image"] == "kfn/python3.11:dev"
    for c in (agent, fn):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "tmp" if c is fn else "agent-tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == "1024Mi"


def test_lambda_environment_variables():
    dep = deployment()
    fn = env_of(container(dep, "function"))
    assert fn["AWS_LAMBDA_FUNCTION_NAME"] == "hello"
    assert fn["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert fn["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1769"
    assert fn["AWS_REGION"] == "us-east-1"
    assert fn["_HANDLER"] == "app.handler"
    assert fn["LAMBDA_TASK_ROOT"] == "/var/task"
    assert fn["TZ"] == ":UTC"
    assert fn["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert fn["STAGE"] == "prod"
    assert container(dep, "function")["envFrom"] == [{"secretRef": {"name": "db"}}]
    agent = env_of(container(dep, "agent"))
    assert agent["KFN_TIMEOUT_SECONDS"] == "30"
    # the function sees its namespace's account in context.invoked_function_arn, as the gateway's ARNs show it
    assert agent["KFN_FUNCTION_ARN"] == f"arn:aws:lambda:us-east-1:{names.account_id('ns')}:function:hello"
    assert "STAGE" not in agent


def test_published_version_environment_says_its_number():
    dep = children(version="4")[cond.DEPLOYMENT_READY][0]
    assert dep["metadata"]["name"] == "hello-v4"
    assert env_of(container(dep, "function"))["AWS_LAMBDA_FUNCTION_VERSION"] == "4"


@pytest.mark.parametrize(("memory", "millicores"), [(128, 73), (1769, 1000), (3538, 2000), (10240, 5789)])
def test_cpu_in_proportion_to_memory(memory, millicores):
    assert cpu_millicores(memory) == millicores
    spec = {**BASE, "memoryMB": memory}
    res = container(deployment(spec), "function")["resources"]
    assert res["limits"] == {"memory": f"{memory}Mi", "cpu": f"{millicores}m"}
    assert res["requests"] == res["limits"]


def test_inline_code_becomes_a_configmap_mounted_read_only():
    objs = children()
    cm = objs[cond.CODE_READY][0]
    assert sorted(cm["data"].values()) == sorted(BASE["code"]["inline"]["files"].values())
    pod = objs[cond.DEPLOYMENT_READY][0]["spec"]["template"]["spec"]
    task = next(v for v in pod["volumes"] if v["name"] == "task")
    assert {i["path"] for i in task["configMap"]["items"]} == {"app.py", "lib/util.py"}
    assert "initContainers" not in pod


@pytest.mark.parametrize("extra", [0, 1])
def test_inline_code_is_measured_in_utf8_bytes_alike_at_admission_and_reconcile(extra: int):
    # 262,144 bytes as two-byte characters (131,072 of them) plus a four-byte one: the character count is far
    # under the limit, so only a byte count refuses the +1 side (the old character rule accepted it at admission
    # and the reconcile then refused it).
    spec = copy.deepcopy(BASE)
    spec["code"]["inline"]["files"] = {"app.py": "\u00e9" * 131_070, "lib/util.py": "\U0001F600" + "x" * extra}
    message = "spec.code.inline.files: inline code must be at most 262144 bytes in total (UTF-8)"
    doc = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "hello"}, "spec": spec}
    if not extra:
        assert parse_function_spec(spec).code.inline is not None
        assert admission_errors(doc) == []
        assert children(spec)[cond.CODE_READY][0]["data"]["app.py"] == spec["code"]["inline"]["files"]["app.py"]
        return
    with pytest.raises(SpecError) as refused:
        parse_function_spec(spec)
    assert str(refused.value) == message
    assert admission_errors(doc) == [message.replace("files: ", "files: Invalid value: ", 1)]
    with pytest.raises(CodeError) as info:  # a spec admitted before the rule counted bytes
        children(spec)
    assert str(info.value) == f"{message}, got 262145"


@pytest.mark.parametrize(
    ("zip_spec", "volume_key"),
    [
        ({"configMapRef": {"name": "src", "key": "code.zip"}}, "configMap"),
        ({"secretRef": {"name": "src", "key": "code.zip"}}, "secret"),
        ({"url": "http://127.0.0.1/code.zip", "sha256": "a" * 64}, None),
    ],
)
def test_zip_code_is_extracted_by_an_init_container(zip_spec, volume_key):
    import json

    spec = {**BASE, "code": {"zip": zip_spec}, "layers": [{"name": "deps", "zip": {"url": "http://127.0.0.1/l.zip", "sha256": "b" * 64}}]}
    objs = children(spec)
    assert objs[cond.CODE_READY] == []
    pod = objs[cond.DEPLOYMENT_READY][0]["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    items = json.loads(init["command"][-1])
    # Layers are staged away from /opt in the init container: /opt of its own image stays visible.
    assert [i["dest"] for i in items] == ["/var/task", "/kfn/opt"]
    assert {"name": "opt", "mountPath": "/kfn/opt"} in init["volumeMounts"]
    assert items[1]["sha256"] == "b" * 64
    if volume_key:
        assert any(volume_key in v for v in pod["volumes"])
    else:
        assert items[0]["url"] == "http://127.0.0.1/code.zip" and items[0]["sha256"] == "a" * 64
    fn = container(objs[cond.DEPLOYMENT_READY][0], "function")
    assert {"name": "opt", "mountPath": "/opt", "readOnly": True} in fn["volumeMounts"]


def test_image_functions_run_the_users_image():
    spec = {"code": {"image": "example/fn:1"}, "imageConfig": {"command": ["app.handler"]}}
    dep = deployment(spec)
    fn = container(dep, "function")
    assert fn["image"] == "example/fn:1" and fn["args"] == ["app.handler"]
    assert "command" not in fn


@pytest.mark.parametrize("runtime", ["provided", "provided.al2023", "provided.al2"])
def test_provided_runtimes_keep_the_managed_entrypoint(runtime):
    # Replacing the entrypoint with /var/task/bootstrap would lose the bootstrap's restart loop and Tail.
    spec = {**BASE, "runtime": runtime, "handler": "function.handler"}
    fn = container(deployment(spec), "function")
    assert fn["image"] == "kfn/python3.11:dev"
    assert "command" not in fn
    assert fn["args"] == ["provided"]


def test_managed_runtime_keeps_image_entrypoint_and_arguments():
    fn = container(deployment(), "function")
    assert "command" not in fn and "args" not in fn


def test_a_crashing_runtime_or_code_fetch_leaves_its_output_as_termination_message():
    spec = {**BASE, "code": {"zip": {"url": "http://127.0.0.1/code.zip", "sha256": "a" * 64}}}
    pod = deployment(spec)["spec"]["template"]["spec"]
    assert container(deployment(spec), "function")["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["initContainers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_images_are_configurable():
    dep = deployment(images=Images(agent="reg/agent:1", runtime_template="reg/{runtime}:2"))
    assert container(dep, "agent")["image"] == "reg/agent:1"
    assert container(dep, "function")["image"] == "reg/python3.11:2"


def test_service_is_headless_for_ready_environments_only():
    svc = children()[cond.SERVICE_READY][0]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is False
    assert svc["spec"]["selector"] == {"kfn.dev/function": "hello", "kfn.dev/version": "latest"}


def test_service_account_token_only_when_asked():
    assert children()[cond.SERVICE_ACCOUNT_READY][0]["automountServiceAccountToken"] is False
    objs = children(service_account_token=True)
    assert objs[cond.SERVICE_ACCOUNT_READY][0]["automountServiceAccountToken"] is True


def test_network_policies_without_vpc_block_only_smtp():
    ingress, egress = children()[cond.NETWORK_POLICY_READY]
    assert ingress["spec"]["ingress"][0]["from"][0]["podSelector"] == {"matchLabels": {"kfn.dev/component": "gateway"}}
    ports = egress["spec"]["egress"][0]["ports"]
    tcp = [(p["port"], p["endPort"]) for p in ports if p["protocol"] == "TCP"]
    assert tcp == [(1, 24), (26, 65535)]
    assert "to" not in egress["spec"]["egress"][0]


def test_network_policies_with_vpc_allow_only_dns_and_subnets():
    spec = {**BASE, "vpcConfig": {"subnets": ["10.1.0.0/16", "data"], "securityGroups": ["db-clients"]}}
    objs = children(spec)
    egress = objs[cond.NETWORK_POLICY_READY][1]
    peers = egress["spec"]["egress"][1]["to"]
    assert {"ipBlock": {"cidr": "10.1.0.0/16"}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kfn.dev/subnet": "data"}}} in peers
    # what the group allows is the group's own policy (tests/unit/test_network.py), not the function's
    assert not any("podSelector" in p for p in peers)
    labels = objs[cond.DEPLOYMENT_READY][0]["spec"]["template"]["metadata"]["labels"]
    assert labels["sg.kfn.dev/db-clients"] == "member"


def test_digests():
    assert inline_sha256({"a.py": "1"}) == inline_sha256({"a.py": "1"})
    assert inline_sha256({"a.py": "1"}) != inline_sha256({"a.py": "2"})
    assert image_sha256("r/x@sha256:" + "c" * 64) == "c" * 64


def test_code_digest_on_pod_template_rolls_the_deployment():
    a = EnvironmentInput("ns", "hello", "$LATEST", OWNER, BASE, "one")
    b = EnvironmentInput("ns", "hello", "$LATEST", OWNER, BASE, "two")
    ta = build_environment(a)[cond.DEPLOYMENT_READY][0]["spec"]["template"]
    tb = build_environment(b)[cond.DEPLOYMENT_READY][0]["spec"]["template"]
    assert ta != tb


@pytest.mark.parametrize(("reserved", "surge"), [(None, 1), (0, 0), (5, 0)])
def test_a_rollout_never_runs_more_environments_than_reserved_concurrency(reserved, surge):
    spec = {**BASE, "reservedConcurrency": reserved} if reserved is not None else BASE
    rolling = deployment(spec)["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxSurge"] == surge
    assert rolling["maxUnavailable"] == 1 - surge  # a rollout still makes progress


def test_file_system_configs_mount_the_claim_in_the_function_container_only():
    """Catches: the claim mounted nowhere, in the agent (which must not see user data), or writable when the
    config says readOnly."""
    spec = {**BASE, "fileSystemConfigs": [{"persistentVolumeClaim": "shared", "localMountPath": "/mnt/data",
                                           "readOnly": True}]}
    dep = deployment(spec)
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    claim = next(v for v in volumes.values() if "persistentVolumeClaim" in v)
    assert claim["persistentVolumeClaim"] == {"claimName": "shared", "readOnly": True}
    mounts = [m for m in container(dep, "function")["volumeMounts"] if m["name"] == claim["name"]]
    assert mounts == [{"name": claim["name"], "mountPath": "/mnt/data", "readOnly": True}]
    assert all(m["name"] != claim["name"] for m in container(dep, "agent")["volumeMounts"])
    assert not any("persistentVolumeClaim" in v for v in deployment()["spec"]["template"]["spec"]["volumes"])
