"""Builders of one version's execution environments: Deployment, Service, ServiceAccount.

The pod follows the operator-agent contract in docs/architecture.md: an
``agent`` container (``kfn agent``: Runtime API on 127.0.0.1:9001, invoke and
probes on :8080) and a ``function`` container (the managed runtime image or
the user's image), sharing a process namespace so the agent can reset the
runtime after a timeout.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfn import names
from kfn.scaler.keda import KEDA, KedaSettings, mode_of
from kfn.resources.code import CodePlan, EXTRACT_SCRIPT, TASK_ROOT
from kfn.resources.common import Owner, metadata

AGENT_PORT = 8080
RUNTIME_API = "127.0.0.1:9001"
MB_PER_VCPU = 1769  # Lambda: a function with 1,769 MB has one vCPU
RUN_AS = 1000  # non-root uid shared by agent and runtime (the agent signals the runtime)
GRACE_EXTRA_SECONDS = 10  # a running invocation may finish before the pod goes
DEFAULT_REGION = "us-east-1"
ACCOUNT_ID = "000000000000"
RUNTIME_DIR = "/var/runtime"  # Lambda's place for the runtime; /opt is for layers alone


# The agent container's postStart hook: wait (at most 60 s) until the Runtime API accepts connections.
WAIT_FOR_RUNTIME_API = f"""
import socket, sys, time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", {RUNTIME_API.rsplit(":", 1)[1]}), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("kfn: the agent's Runtime API did not come up in 60 s")
"""


# preStop of both containers: the agent stops taking invocations (readiness false) and answers once the running
# one has finished (kfn.agent.server.DRAIN_PATH); the kubelet waits for it, within terminationGracePeriodSeconds
# (timeout + GRACE_EXTRA_SECONDS), before it sends SIGTERM. httpGet: no binary needed in a user's image.
DRAIN_HOOK = {"httpGet": {"path": "/kfn/drain", "port": AGENT_PORT}}


# Tag of kfn's own images; KFN_IMAGE_TAG lets several builds of kfn share one node (each its own tag).
IMAGE_TAG = os.environ.get("KFN_IMAGE_TAG", "dev")


@dataclass(frozen=True)
class Images:
    """Images of the execution environment (operator flags/env can change them)."""

    agent: str = f"kfn/kfn:{IMAGE_TAG}"
    runtime_template: str = "kfn/{runtime}:" + IMAGE_TAG  # managed runtimes: python3.11 -> kfn/python3.11:dev
    provided: str = f"kfn/python3.11:{IMAGE_TAG}"  # provided* runtimes: its bootstrap runs /var/task/bootstrap
    pull_policy: str = "IfNotPresent"  # images are loaded into the node, never pulled
    agent_cpu: str = "50m"
    agent_memory: str = "64Mi"
    # Not an image, but the operator's other per-environment setting that travels the same way: the
    # scaling mode default and KEDA mode's settings (kfn/scaler/keda.py).
    keda: KedaSettings = KedaSettings()
    # The OTLP/HTTP collector the agents send invocation spans to (operator --otlp-endpoint; docs/tracing.md);
    # '' keeps tracing off in the pods and their template as it was.
    otlp_endpoint: str = ""


@dataclass(frozen=True)
class EnvironmentInput:
    """Everything the builders need for one version of one function."""

    namespace: str
    function: str
    version: str  # "$LATEST" or "3"
    owner: Owner
    spec: Mapping[str, Any]  # camelCase FunctionConfig (Function spec or FunctionVersion spec.config)
    code_sha256: str
    images: Images = field(default_factory=Images)
    region: str = DEFAULT_REGION
    provisioned: int = 0  # provisioned concurrency floor (from aliases)
    # Lambda functions get no Kubernetes credentials; the annotation
    # kfn.dev/service-account-token: "true" on the Function asks for them.
    service_account_token: bool = False
    # The Function's spec.scaling (burstSize, burstRatePerSecond, idleSeconds, mode): function-wide, so
    # published versions follow the Function's current one; and the mode status last reported.
    function_scaling: Mapping[str, Any] = field(default_factory=dict)
    previous_scaling: str | None = None

    @property
    def scaling(self) -> str:
        """"builtin" or "keda": the Function's ``spec.scaling.mode``, else the operator default."""
        return mode_of(self.function_scaling, self.images.keda)

    @property
    def labels(self) -> dict[str, str]:
        return names.function_labels(self.function, self.version)

    @property
    def name(self) -> str:
        return names.environment_name(self.function, self.version)

    def meta(self, name: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        return metadata(name, self.namespace, self.labels, self.owner, annotations)


def function_arn(function: str, region: str = DEFAULT_REGION) -> str:
    """The unqualified ARN kfn reports for a function."""
    return f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function}"


def cpu_millicores(memory_mb: int) -> int:
    """CPU in proportion to memory, as Lambda does (1,769 MB = 1 vCPU)."""
    return max(1, math.ceil(memory_mb * 1000 / MB_PER_VCPU))


def lambda_environment(inp: EnvironmentInput) -> list[dict[str, Any]]:
    """Lambda's defined runtime environment variables, for both containers."""
    spec = inp.spec
    logging = spec.get("loggingConfig") or {}
    log_format = logging.get("logFormat", "Text")
    env = [
        # The pod name names the log stream, like Lambda's per-environment stream.
        {"name": "KFN_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AWS_LAMBDA_FUNCTION_NAME", "value": inp.function},
        {"name": "AWS_LAMBDA_FUNCTION_VERSION", "value": names.lambda_version(inp.version)},
        {"name": "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "value": str(spec.get("memoryMB", 128))},
        {"name": "AWS_REGION", "value": inp.region},
        {"name": "AWS_DEFAULT_REGION", "value": inp.region},
        {"name": "_HANDLER", "value": spec.get("handler") or ""},
        {"name": "LAMBDA_TASK_ROOT", "value": TASK_ROOT},
        {"name": "LAMBDA_RUNTIME_DIR", "value": RUNTIME_DIR},
        {"name": "AWS_LAMBDA_LOG_GROUP_NAME", "value": f"/aws/lambda/{inp.function}"},
        {"name": "AWS_LAMBDA_LOG_STREAM_NAME", "value": "$(KFN_POD_NAME)"},
        {"name": "AWS_LAMBDA_LOG_FORMAT", "value": log_format},
        {
            "name": "AWS_LAMBDA_INITIALIZATION_TYPE",
            "value": "provisioned-concurrency" if inp.provisioned > 0 else "on-demand",
        },
        {"name": "TZ", "value": ":UTC"},
    ]
    if spec.get("runtime"):
        env.append({"name": "AWS_EXECUTION_ENV", "value": f"AWS_Lambda_{spec['runtime']}"})
    if log_format == "JSON" and logging.get("applicationLogLevel"):
        env.append({"name": "AWS_LAMBDA_LOG_LEVEL", "value": logging["applicationLogLevel"]})
    return env


def _security_context() -> dict[str, Any]:
    return {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class FunctionProcess:
    """What the function container runs: its image, and overrides of the image's entrypoint and arguments."""

    image: str
    command: list[str] | None = None  # None keeps the image's ENTRYPOINT
    args: list[str] | None = None  # None keeps the image's CMD


def function_process(inp: EnvironmentInput) -> FunctionProcess:
    """The function container's process, one contract for every runtime (docs/architecture.md).

    Managed runtimes and ``provided*`` run the managed image's own entrypoint (its bootstrap: restart loop,
    Tail); ``provided*`` only picks the flavour that runs ``$LAMBDA_TASK_ROOT/bootstrap``. A ``code.image``
    runs the user's image as built, changed only by ``imageConfig`` (Lambda's ImageConfig).
    """
    spec = inp.spec
    code = spec.get("code") or {}
    if code.get("image"):
        image_config = spec.get("imageConfig") or {}
        return FunctionProcess(code["image"], image_config.get("entryPoint"), image_config.get("command"))
    runtime = spec.get("runtime") or "python3.11"
    if runtime.startswith("provided"):
        return FunctionProcess(inp.images.provided, None, ["provided"])
    return FunctionProcess(inp.images.runtime_template.format(runtime=runtime))


def make_deployment(inp: EnvironmentInput, plan: CodePlan) -> dict[str, Any]:
    """The Deployment running a version's execution environments (replicas left to the scaler)."""
    spec = inp.spec
    memory_mb = int(spec.get("memoryMB", 128))
    timeout = int(spec.get("timeoutSeconds", 3))
    tmp_mb = int(spec.get("ephemeralStorageMB", 512))
    env = lambda_environment(inp)
    user_env = [{"name": k, "value": v} for k, v in sorted(((spec.get("environment") or {}).get("variables") or {}).items())]
    env_from = [{"secretRef": {"name": s["name"]}} for s in (spec.get("environment") or {}).get("secretRefs") or []]
    process = function_process(inp)
    image_config = spec.get("imageConfig") or {}

    function_container: dict[str, Any] = {
        "name": "function",
        "image": process.image,
        "imagePullPolicy": inp.images.pull_policy,
        # A runtime that dies leaves its last output as the termination message, which status reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [*env, {"name": "AWS_LAMBDA_RUNTIME_API", "value": RUNTIME_API}, *user_env],
        "resources": {
            "requests": {"memory": f"{memory_mb}Mi", "cpu": f"{cpu_millicores(memory_mb)}m"},
            "limits": {"memory": f"{memory_mb}Mi", "cpu": f"{cpu_millicores(memory_mb)}m"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *plan.function_mounts, *file_system_mounts(spec)],
        "securityContext": _security_context(),
        # Scale-down drains: both containers' SIGTERM waits until the running invocation has finished.
        "lifecycle": {"preStop": DRAIN_HOOK},
    }
    if process.command:
        function_container["command"] = process.command
    if process.args:
        function_container["args"] = process.args
    if image_config.get("workingDirectory"):
        function_container["workingDir"] = image_config["workingDirectory"]
    if env_from:
        function_container["envFrom"] = env_from

    agent_resources = {"cpu": inp.images.agent_cpu, "memory": inp.images.agent_memory}
    agent: dict[str, Any] = {
        "name": "agent",
        "image": inp.images.agent,
        "imagePullPolicy": inp.images.pull_policy,
        "command": ["kfn", "agent"],
        "env": [
            *env,
            {"name": "KFN_TIMEOUT_SECONDS", "value": str(timeout)},
            {"name": "KFN_FUNCTION_ARN", "value": names.function_arn(inp.region, names.account_id(inp.namespace), inp.function)},
            *([{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": inp.images.otlp_endpoint}]
              if inp.images.otlp_endpoint else []),
        ],
        "ports": [{"name": "http", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        # Ready only once the runtime's init has finished (its first /next).
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": AGENT_PORT},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        # The agent may take a while to start on a busy node: liveness counts only
        # after the startup probe passed, so a slow start is not a restart loop.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": AGENT_PORT},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": AGENT_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": dict(agent_resources), "limits": dict(agent_resources)},
        # The kubelet starts the containers in order and waits for a postStart hook before the next one: the
        # runtime starts only once the Runtime API listens (else its first connection is refused, and that
        # failed init would stand until an invocation retries it).
        "lifecycle": {"postStart": {"exec": {"command": ["python3", "-c", WAIT_FOR_RUNTIME_API]}},
                      "preStop": DRAIN_HOOK},
        "volumeMounts": [{"name": "agent-tmp", "mountPath": "/tmp"}],
        "securityContext": _security_context(),
    }

    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": f"{tmp_mb}Mi"}},
        {"name": "agent-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        *plan.volumes,
        *file_system_volumes(spec),
    ]
    init_containers = []
    if plan.extract_items:
        init_containers.append(
            {
                "name": "code",
                "image": inp.images.agent,
                "imagePullPolicy": inp.images.pull_policy,
                "command": ["python3", "-c", EXTRACT_SCRIPT, json.dumps(plan.extract_items)],
                "volumeMounts": plan.extract_mounts,
                # EXTRACT_SCRIPT writes why it failed; a crash's last output stands in otherwise.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {"requests": dict(agent_resources), "limits": {"cpu": "500m", "memory": "256Mi"}},
                "securityContext": _security_context(),
            }
        )

    token = inp.service_account_token
    pod_spec: dict[str, Any] = {
        "serviceAccountName": inp.name,
        "automountServiceAccountToken": bool(token),
        "shareProcessNamespace": True,
        "enableServiceLinks": False,  # keep the function's environment as Lambda's
        "terminationGracePeriodSeconds": timeout + GRACE_EXTRA_SECONDS,
        "nodeSelector": {"kubernetes.io/arch": spec.get("architecture", "amd64")},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [agent, function_container],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers

    template_labels = dict(inp.labels)
    for group in (spec.get("vpcConfig") or {}).get("securityGroups") or []:
        template_labels[security_group_label(group)] = "member"
    annotations = {names.ANN_CODE_SHA256: inp.code_sha256}
    deployment_annotations = {names.ANN_PROVISIONED: str(inp.provisioned)}
    if spec.get("reservedConcurrency") is not None:
        deployment_annotations["kfn.dev/reserved-concurrency"] = str(spec["reservedConcurrency"])
    if inp.scaling == KEDA:
        deployment_annotations[names.ANN_SCALING] = KEDA  # kfn's own scaler leaves its replicas to KEDA
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": inp.meta(inp.name, deployment_annotations),
        "spec": {
            # No replicas: the scaler owns them (server-side apply keeps them out of our field set).
            "selector": {"matchLabels": names.selector_labels(inp.function, inp.version)},
            "revisionHistoryLimit": 2,
            "strategy": rollout_strategy(spec.get("reservedConcurrency")),
            "template": {"metadata": {"labels": template_labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def file_system_volume_name(index: int) -> str:
    """The pod volume of ``spec.fileSystemConfigs[index]``."""
    return f"fs-{index}"


def file_system_volumes(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``spec.fileSystemConfigs`` as pod volumes: each claim, read-only when the config says so.

    The function's uid/gid (``RUN_AS``) is the pod's fsGroup, so a volume whose plugin manages ownership (most
    CSI drivers, local volumes) is writable by the function as an EFS access point's POSIX user would make it;
    a hostPath volume keeps its directory's own owner and mode.
    """
    return [
        {"name": file_system_volume_name(i),
         "persistentVolumeClaim": {"claimName": fs["persistentVolumeClaim"], "readOnly": bool(fs.get("readOnly"))}}
        for i, fs in enumerate(spec.get("fileSystemConfigs") or [])
    ]


def file_system_mounts(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The function container's mounts of ``spec.fileSystemConfigs`` at their ``localMountPath``."""
    return [
        {"name": file_system_volume_name(i), "mountPath": fs["localMountPath"], "readOnly": bool(fs.get("readOnly"))}
        for i, fs in enumerate(spec.get("fileSystemConfigs") or [])
    ]


def rollout_strategy(reserved: int | None) -> dict[str, Any]:
    """How a Deployment replaces environments on a change.

    Without a reservation one extra environment may start first (no capacity
    dip). With reserved concurrency N no extra one may: the gateway's exact
    concurrency relies on "concurrency <= environments <= N", so a rollout takes
    one old environment down before it starts a new one.
    """
    if reserved is None:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def make_service(inp: EnvironmentInput) -> dict[str, Any]:
    """A headless Service: its EndpointSlices list the ready execution environments for the gateway."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": inp.meta(inp.name),
        "spec": {
            "clusterIP": "None",
            "selector": names.selector_labels(inp.function, inp.version),
            "publishNotReadyAddresses": False,
            "ports": [{"name": "http", "port": AGENT_PORT, "targetPort": AGENT_PORT, "protocol": "TCP"}],
        },
    }


def make_service_account(inp: EnvironmentInput) -> dict[str, Any]:
    """The version's ServiceAccount; its token is mounted only when asked for."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": inp.meta(inp.name),
        "automountServiceAccountToken": inp.service_account_token,
    }


def endpoint(inp: EnvironmentInput) -> str:
    """The in-cluster address that serves this version (the headless Service)."""
    return f"http://{inp.name}.{inp.namespace}.svc:{AGENT_PORT}"


def security_group_label(group: str) -> str:
    """Pod label marking membership of a named security group."""
    return f"sg.kfn.dev/{names.child_name(group)}"
