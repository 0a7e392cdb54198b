"""``kfn invoke``: invoke a function the way ``aws lambda invoke`` does, and show what Lambda would.

With ``--endpoint-url`` it speaks the Lambda Invoke API to that address (the
gateway, or one agent). Without it, it goes through the API server's service
proxy to the installed gateway (Service ``kfn-gateway`` in ``kfn-system``),
naming the function by a partial ARN with its namespace's account id; where no
gateway is installed (or it has no ready replica), it finds a ready execution
environment of the function (or of the version an alias picks) and reaches it
through the API server's pod proxy. Both work from anywhere the kubeconfig does.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
AGENT_PORT = 8080
BUSY_HEADER = "X-Kfn-Environment-Busy"
GATEWAY_SERVICE = "kfn-gateway"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", help="function name")
    parser.add_argument("--qualifier", "-q", default=None, help="version number, $LATEST or alias name")
    parser.add_argument("--namespace", "-n", default="default", help="namespace of the Function (default: default)")
    payload = parser.add_mutually_exclusive_group()
    payload.add_argument("--payload", "-p", default=None, help="event as JSON text")
    payload.add_argument("--payload-file", default=None, help="file holding the event ('-' for standard input)")
    parser.add_argument("--log-type", choices=["None", "Tail"], default="None", help="Tail: print the last 4 KB of the log")
    parser.add_argument(
        "--invocation-type", choices=["RequestResponse", "Event", "DryRun"], default="RequestResponse"
    )
    parser.add_argument("--endpoint-url", default=None, help="a Lambda Invoke API endpoint (agent or gateway)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument("--gateway-namespace", default="kfn-system",
                        help="namespace of the installed gateway (Service kfn-gateway); default: kfn-system")


def _payload(args: argparse.Namespace) -> bytes:
    if args.payload_file == "-":
        return sys.stdin.buffer.read()
    if args.payload_file:
        with open(args.payload_file, "rb") as f:
            return f.read()
    return (args.payload if args.payload is not None else "{}").encode()


def _headers(args: argparse.Namespace) -> dict[str, str]:
    return {
        "X-Amz-Invocation-Type": args.invocation_type,
        "X-Amz-Log-Type": args.log_type,
        "Content-Type": "application/json",
    }


def _post_url(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=960) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def _ready_pods(namespace: str, function: str, version: str) -> list[str]:
    from kfn import k8s, names

    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(function, version).items())
    pods = k8s.list_objects("Pod", namespace, selector)
    ready = []
    for pod in pods:
        conditions = (pod.get("status") or {}).get("conditions") or []
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready.append(pod["metadata"]["name"])
    return ready


def _version_for(args: argparse.Namespace) -> str:
    from kfn import k8s, names
    from kfn.gateway import routing

    q = args.qualifier
    if routing.is_version_qualifier(q):
        return names.LATEST if q is None else q
    for alias in k8s.list_objects(names.ALIAS_KIND, args.namespace):
        spec = alias.get("spec") or {}
        if spec.get("functionName") == args.function and spec.get("name") == q:
            return routing.resolve_alias(alias.get("status"), q)
    raise SystemExit(f"kfn invoke: function {args.function} has no alias {q} in namespace {args.namespace}")


def _invoke_through_gateway(args: argparse.Namespace, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Through the installed gateway (the API server's service proxy); None when there is no gateway to use."""
    from kfn import k8s, names

    if k8s.get("Service", args.gateway_namespace, GATEWAY_SERVICE) is None:
        return None
    # A partial ARN names the namespace (its account id) whatever the gateway's default namespace is.
    name = f"{names.account_id(args.namespace)}:function:{args.function}"
    subpath = INVOKE_PATH.format(name=urllib.parse.quote(name, safe=":"))
    if args.qualifier:
        subpath += "?Qualifier=" + urllib.parse.quote(args.qualifier)
    try:
        return k8s.service_proxy_post(args.gateway_namespace, GATEWAY_SERVICE, "http", subpath, body, _headers(args))
    except k8s.ApiError as e:
        if e.status in (502, 503):  # the API server found no ready gateway replica: use the pod proxy
            print(f"kfn invoke: gateway unavailable ({e.message}); invoking an environment directly", file=sys.stderr)
            return None
        raise


def _invoke_in_cluster(args: argparse.Namespace, body: bytes) -> tuple[int, dict[str, str], bytes]:
    from kfn import k8s

    k8s.configure(args.kubeconfig, args.context)
    through_gateway = _invoke_through_gateway(args, body)
    if through_gateway is not None:
        return through_gateway
    version = _version_for(args)
    pods = _ready_pods(args.namespace, args.function, version)
    if not pods:
        raise SystemExit(
            f"kfn invoke: no ready execution environment for {args.function} version {version} in "
            f"namespace {args.namespace} (see `kubectl get fn {args.function} -n {args.namespace}`)"
        )
    subpath = INVOKE_PATH.format(name=urllib.parse.quote(args.function))
    if args.qualifier:
        subpath += "?Qualifier=" + urllib.parse.quote(args.qualifier)
    answer: tuple[int, dict[str, str], bytes] = (0, {}, b"")
    for pod in pods:  # a busy environment answers at once; try the next one
        answer = k8s.proxy_post(args.namespace, pod, AGENT_PORT, subpath, body, _headers(args))
        if answer[1].get(BUSY_HEADER) != "true":
            break
    return answer


def run(args: argparse.Namespace) -> int:
    body = _payload(args)
    if args.endpoint_url:
        url = args.endpoint_url.rstrip("/") + INVOKE_PATH.format(name=urllib.parse.quote(args.function))
        if args.qualifier:
            url += "?Qualifier=" + urllib.parse.quote(args.qualifier)
        status, headers, data = _post_url(url, body, _headers(args))
    else:
        status, headers, data = _invoke_in_cluster(args, body)
    lower = {k.lower(): v for k, v in headers.items()}
    summary = {"StatusCode": status}
    if "x-amz-executed-version" in lower:
        summary["ExecutedVersion"] = lower["x-amz-executed-version"]
    if "x-amz-function-error" in lower:
        summary["FunctionError"] = lower["x-amz-function-error"]
    print(json.dumps(summary), file=sys.stderr)
    if "x-amz-log-result" in lower:
        sys.stderr.write(base64.b64decode(lower["x-amz-log-result"]).decode("utf-8", "replace"))
    sys.stdout.buffer.write(data)
    if data and not data.endswith(b"\n"):
        sys.stdout.write("\n")
    # like the aws CLI: a function error is still a successful call; an HTTP error is not
    return 0 if status < 300 else 1
