"""Tracing end to end (docs/tracing.md): boto3 invokes through a real ``kfn gateway`` to real function pods, whose
gateway and agents export OpenTelemetry spans over OTLP/HTTP to a real OpenTelemetry Collector (``otelcol``, the
core collector's OTLP receiver built from the Go module proxy by testbed/build-tools.sh); the collector forwards
what it received (OTLP/JSON) to a small HTTP sink in this test, which reads the spans.

What a user would notice: one trace per invocation, under the caller's ``traceparent``, whose spans go gateway ->
agent -> the function's run with the right parent links; the function's ``_X_AMZN_TRACE_ID`` carries the same trace
id; Active records a caller that made no decision; PassThrough records nothing unless the caller sampled.
"""

from __future__ import annotations

import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from kfn import tracing

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
import testbed as tb  # noqa: E402
from test_gateway_catalog import GatewayProcess  # noqa: E402
from test_operator import Api, Operator, free_port, wait_until  # noqa: E402
from tools import build_tool  # noqa: E402

pytestmark = pytest.mark.e2e

# The function reports the trace header it saw (awslambdaric sets _X_AMZN_TRACE_ID from Lambda-Runtime-Trace-Id).
APP = """\
import os


def handler(event, context):
    return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}
"""


def fn(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
            "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 10,
                     "code": {"inline": {"files": {"app.py": APP}}}, **spec}}


class Sink:
    """The collector's OTLP/HTTP exporter target: spans it forwarded, as (service.name, span) pairs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with sink.lock:
                    for rs in doc.get("resourceSpans") or []:
                        attrs = {a["key"]: a["value"].get("stringValue") for a in
                                 (rs.get("resource") or {}).get("attributes") or []}
                        for ss in rs.get("scopeSpans") or []:
                            sink.spans.extend((attrs.get("service.name") or "", s) for s in ss.get("spans") or [])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s["traceId"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


COLLECTOR_CONFIG = """\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 0.0.0.0:{port}
processors:
  batch:
    timeout: 200ms
exporters:
  otlp_http:
    endpoint: http://127.0.0.1:{sink}
    encoding: json
    compression: none
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp_http]
"""


def apply_crds(cluster: Any) -> None:
    crds = sorted((Path(__file__).parents[2] / "crds").glob("*.yaml"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *[a for f in crds for a in ("-f", str(f))])


def apply_with_this_branchs_crds(cluster: Any, api: Any, docs: list[dict[str, Any]]) -> None:
    """Apply *docs* under this tree's CRDs: the test bed is shared, and a tree without ``tracingConfig`` in its
    Function schema may have applied its CRDs since this session's (the API server then refuses the field)."""
    def attempt() -> bool:
        apply_crds(cluster)
        return api.apply(docs, check=False).returncode == 0

    wait_until(attempt, 120, "the Functions are created under this tree's CRDs", interval=2)


class World:
    def __init__(self, cluster: Any, ns: str, api: Any, gateway: GatewayProcess, sink: Sink) -> None:
        self.cluster, self.ns, self.api, self.gateway, self.sink = cluster, ns, api, gateway, sink
        self.touches = 0

    def mode_served(self, name: str) -> str:
        """The TracingConfig.Mode the gateway serves for *name* (GetFunctionConfiguration, boto3)."""
        client = boto3.client("lambda", endpoint_url=self.gateway.url, region_name="us-east-1",
                              aws_access_key_id="any", aws_secret_access_key="any")
        try:
            return str(client.get_function_configuration(FunctionName=name)["TracingConfig"]["Mode"])
        finally:
            client.close()

    def ensure_mode(self, name: str, mode: str) -> None:
        """Wait until the gateway serves *mode* for *name*. On the shared test bed another tree's CRDs (without
        ``tracingConfig``) may replace this tree's at any time, and the API server then drops the field when it
        reads the Function: re-apply this tree's CRDs and touch the Function, so the gateway's watch gets it whole."""
        def served() -> bool:
            if self.mode_served(name) == mode:
                return True
            self.touches += 1
            apply_crds(self.cluster)
            self.api.kubectl("annotate", "--overwrite", "function", name, f"kfn.dev/test-touch={self.touches}")
            return False

        wait_until(served, 60, f"the gateway serves TracingConfig {mode} for {name}", interval=1)


@pytest.fixture(scope="module")
def world(cluster: Any, crds_installed: Any, testbed_images: Any, pytestconfig: pytest.Config,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    otelcol = build_tool("otelcol", pytestconfig)
    log_dir = tmp_path_factory.mktemp("tracing-e2e")
    sink = Sink()
    port = free_port()
    config = log_dir / "otelcol.yaml"
    config.write_text(COLLECTOR_CONFIG.format(port=port, sink=sink.port))
    collector_log = open(log_dir / "otelcol.log", "wb")  # noqa: SIM115 - closed in the finally below
    collector = subprocess.Popen([otelcol, "--config", str(config)], stdout=collector_log, stderr=subprocess.STDOUT)

    def collector_listens() -> bool:
        assert collector.poll() is None, f"otelcol exited:\n{(log_dir / 'otelcol.log').read_text()[-3000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(collector_listens, 30, "the collector's OTLP/HTTP receiver listens")
    ns = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "kfn.dev/test=true")
    procs: list[Any] = []
    try:
        node_ip = tb.testbed_settings()["NODE_IP"]  # where pods reach this host
        op = Operator(cluster, ns, log_dir, "--otlp-endpoint", f"http://{node_ip}:{port}").start()
        procs.append(op)
        api = Api(cluster, ns)
        apply_with_this_branchs_crds(cluster, api, [fn("active", tracingConfig={"mode": "Active"}), fn("passthrough")])
        for name in ("active", "passthrough"):
            api.wait_ready("function", name, timeout=360)
        gateway = GatewayProcess(cluster, ns, log_dir / "gateway.log", "--cold-start-timeout", "150",
                                 "--otlp-endpoint", f"http://127.0.0.1:{port}").start()
        procs.append(gateway)
        yield World(cluster, ns, api, gateway, sink)
    finally:
        for p in reversed(procs):
            p.stop()
        collector.terminate()
        collector.wait(timeout=30)
        collector_log.close()
        sink.close()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def invoke(world: World, name: str, headers: dict[str, str]) -> dict[str, Any]:
    """boto3's Invoke with extra HTTP headers (a caller instrumented with OpenTelemetry sends ``traceparent``)."""
    client = boto3.client("lambda", endpoint_url=world.gateway.url, region_name="us-east-1",
                          aws_access_key_id="any", aws_secret_access_key="any",
                          config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=60))

    def add(request: Any, **_: Any) -> None:
        for k, v in headers.items():
            request.headers[k] = v

    client.meta.events.register("before-send.lambda.Invoke", add)
    try:
        out = client.invoke(FunctionName=name, Payload=b"{}")
        assert out["StatusCode"] == 200 and "FunctionError" not in out, out
        return json.loads(out["Payload"].read())
    finally:
        client.close()


def new_traceparent(sampled: bool) -> tuple[str, str, str]:
    trace_id, span_id = f"{int(time.time()):08x}{secrets.token_hex(12)}", secrets.token_hex(8)
    return tracing.to_traceparent(trace_id, span_id, sampled), trace_id, span_id


def settled_trace(world: World, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """The spans of *trace_id* by "service/name" (kfn-gateway/Invoke …), once every one in *names* has arrived."""
    def spans() -> dict[str, dict[str, Any]] | None:
        got = {f"{svc}/{s['name']}": s for svc, s in world.sink.trace(trace_id)}
        return got if names <= got.keys() else None

    return wait_until(spans, 60, f"the collector forwards the spans {sorted(names)} of trace {trace_id}")


SPANS = {"kfn-gateway/Invoke", "kfn-gateway/Invoke agent", "kfn-gateway/Response", "kfn-agent/Agent",
         "kfn-agent/Invocation", "kfn-agent/Response"}


def test_active_one_trace_gateway_agent_function_under_the_callers_traceparent(world: World) -> None:
    # Catches: spans in separate traces (context not propagated to the agent), wrong parent links, a trace id
    # the function sees that is not the caller's, spans exported twice or from the wrong process.
    header, trace_id, caller_span = new_traceparent(sampled=True)
    body = invoke(world, "active", {"traceparent": header})
    # the environment's first invocation: its init shows in the trace too (Lambda's Initialization)
    spans = settled_trace(world, trace_id, SPANS | {"kfn-agent/Initialization"})
    keys = [f"{svc}/{s['name']}" for svc, s in world.sink.trace(trace_id)]
    assert sorted(keys) == sorted(set(keys)), keys  # one invocation, one span of each
    root, hop = spans["kfn-gateway/Invoke"], spans["kfn-gateway/Invoke agent"]
    agent, run = spans["kfn-agent/Agent"], spans["kfn-agent/Invocation"]
    assert spans["kfn-gateway/Response"]["parentSpanId"] == root["spanId"]
    assert spans["kfn-agent/Response"]["parentSpanId"] == agent["spanId"]
    assert spans["kfn-agent/Initialization"]["parentSpanId"] == agent["spanId"]
    assert root["parentSpanId"] == caller_span  # under the caller's span
    assert hop["parentSpanId"] == root["spanId"]
    assert agent["parentSpanId"] == hop["spanId"]  # the agent's span: a child of the gateway's hop
    assert run["parentSpanId"] == agent["spanId"]
    # the function sees the caller's trace, its Parent the Invocation span, sampled
    seen = tracing.parse_xray(body["trace"])
    assert seen == tracing.TraceContext(trace_id, run["spanId"], True), body["trace"]
    # the spans nest in time as they do in the request's life
    assert int(root["startTimeUnixNano"]) <= int(hop["startTimeUnixNano"]) <= int(agent["startTimeUnixNano"])
    assert int(run["endTimeUnixNano"]) <= int(root["endTimeUnixNano"])


def test_active_records_a_caller_that_made_no_decision(world: World) -> None:
    # Catches: Active treated as PassThrough (nothing recorded without an incoming sampled header)
    world.ensure_mode("active", "Active")
    body = invoke(world, "active", {})
    seen = tracing.parse_xray(body["trace"])
    assert seen is not None and seen.sampled is True, body["trace"]
    assert abs(int(seen.trace_id[:8], 16) - time.time()) < 600  # X-Ray's id: epoch seconds first
    spans = settled_trace(world, seen.trace_id, SPANS)
    assert not spans["kfn-gateway/Invoke"].get("parentSpanId")  # a new trace's root
    assert seen.parent_id == spans["kfn-agent/Invocation"]["spanId"]


def test_pass_through_records_nothing_unless_the_caller_sampled(world: World) -> None:
    # Catches: PassThrough recording unsampled invocations, or losing the caller's trace id on the way to the code
    unsampled, trace_id, caller_span = new_traceparent(sampled=False)
    body = invoke(world, "passthrough", {"traceparent": unsampled})
    # the function still sees the caller's trace, unsampled, its Parent the caller's span
    assert tracing.parse_xray(body["trace"]) == tracing.TraceContext(trace_id, caller_span, False), body["trace"]
    no_header = tracing.parse_xray(invoke(world, "passthrough", {})["trace"])
    assert no_header is not None and no_header.sampled is False
    # A sampled caller is recorded by the same gateway and agent: once its spans are in, spans of the invocations
    # before it would be too (one batch queue per process, in order)
    sampled, marker, _ = new_traceparent(sampled=True)
    invoke(world, "passthrough", {"traceparent": sampled})
    settled_trace(world, marker, SPANS)
    assert world.sink.trace(trace_id) == []
    assert world.sink.trace(no_header.trace_id) == []


def test_get_function_configuration_shows_the_tracing_mode(world: World) -> None:
    # Catches: TracingConfig hard-wired to PassThrough in the Lambda view
    world.ensure_mode("active", "Active")  # (the check itself, made robust to a shared test bed's CRDs)
    assert world.mode_served("passthrough") == "PassThrough"
