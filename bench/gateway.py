"""Benchmark: kfn's gateway hop against going straight to the agent and against nginx, on the same function pod.

On the full test bed (or --kubeconfig): the real ``kfn operator`` and ``kfn gateway`` (host processes, scoped to a
fresh namespace) run one Function with one execution environment (reserved concurrency 1, so the gateway never
adds another and every path reaches the same pod). In one run, side by side:

* warm invokes, p50/p99 latency and throughput at 1, 8 and 32 concurrent keep-alive clients, (a) straight to the
  agent's invoke port (pod IP), (b) through ``kfn gateway``, (c) through nginx (Debian's, installed with apt-get
  if missing) proxying to the same pod with upstream keep-alive. With one environment, concurrent clients
  compete for it: a 429 (the agent's busy reply, or the gateway's throttle) is retried at once, and throughput
  counts completed invocations;
* cold start: the first invoke through the gateway of the function scaled to zero, against a raw Pod with the
  same pod template created by hand (time until Ready). Medians of a few rounds.

Writes bench/results/gateway.json with the ratios (gateway/direct p50 difference in ms, gateway/nginx throughput,
cold/raw start). The load generator is the same small httptools client for every path.

    python bench/gateway.py [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

from reconcile import Kubectl, free_port  # noqa: E402

from kfn.gateway.agentclient import AgentConnection  # noqa: E402

HANDLER = "def handler(event, context):\n    return {'ok': True}\n"
FUNCTION = "gwbench"
PATH = f"/2015-03-31/functions/{FUNCTION}/invocations"
HEAD = (f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n").encode()
BODY = b'{"bench": 1}'


def testbed_full() -> tuple[str, str]:
    settings = dict(line.split("=", 1) for line in subprocess.run(
        ["bash", str(REPO / "testbed/env.sh"), "print"], capture_output=True, text=True, check=True).stdout.split("\n")
        if "=" in line)
    print("==> test bed (full node): testbed/up.sh", flush=True)
    out = subprocess.run(["bash", str(REPO / "testbed/up.sh")], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"testbed/up.sh failed:\n{out.stderr[-3000:]}")
    return settings.get("KUBECTL") or "kubectl", out.stdout.strip().splitlines()[-1].removeprefix("export KUBECONFIG=")


def cluster(kubeconfig: str | None) -> tuple[str, str]:
    """(kubectl, kubeconfig): the given cluster (kubectl from the test bed's settings), or the full test bed."""
    if not kubeconfig:
        return testbed_full()
    settings = dict(line.split("=", 1) for line in subprocess.run(
        ["bash", str(REPO / "testbed/env.sh"), "print"], capture_output=True, text=True).stdout.split("\n") if "=" in line)
    return settings.get("KUBECTL") or "kubectl", kubeconfig


def bench_namespace(k: Any, kubeconfig: str, prefix: str) -> tuple[dict[str, str], str, Path]:
    """kfn's CRDs applied and a fresh namespace ``<prefix>-<hex>``: returns (env for kfn processes, namespace, a
    work directory for their logs)."""
    ns = f"{prefix}-{secrets.token_hex(3)}"
    k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    k("create", "namespace", ns)
    return {**os.environ, "KUBECONFIG": kubeconfig}, ns, Path(tempfile.mkdtemp(prefix=f"{prefix}-"))


def start_operator(ns: str, work: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """kfn's operator for *ns* as a host process, logging to *work*/operator.log."""
    return subprocess.Popen(
        [sys.executable, "-m", "kfn.cli.main", "operator", "--standalone", "-n", ns, "--liveness", "",
         "--metrics-port", "0"], stdout=open(work / "operator.log", "wb"), stderr=subprocess.STDOUT, env=env)


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process, SIGKILL what has not exited 20 s later."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting until {what}")


def ready_ips(k: Kubectl, ns: str) -> list[str]:
    out = json.loads(k("get", "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={FUNCTION}-latest",
                       "-o", "json").stdout)
    return [ep["addresses"][0] for s in out["items"] for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready")]


# --- load --------------------------------------------------------------------------------------------------------
async def client_loop(host: str, port: int, until: float, lat: list[float], counts: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(AgentConnection, host, port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            answer = await conn.send(HEAD, BODY, loop)
            if answer.status == 200:
                lat.append(time.perf_counter() - t0)
                counts["ok"] += 1
            elif answer.status == 429:
                counts["busy"] += 1  # the one environment is busy: try again at once
            else:
                counts["other"] += 1
            if not conn.usable:
                _, conn = await loop.create_connection(AgentConnection, host, port)
    finally:
        conn.close()


async def load(host: str, port: int, clients: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    counts = {"ok": 0, "busy": 0, "other": 0}
    # warm-up: connections and caches on every hop
    await asyncio.gather(*(client_loop(host, port, time.perf_counter() + 0.5, [], dict(counts)) for _ in range(clients)))
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(host, port, start + seconds, lat, counts) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    lat.sort()
    return {
        "p50_ms": round(1000 * lat[len(lat) // 2], 3) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None,
        "throughput_per_s": round(counts["ok"] / elapsed, 1),
        "busy_replies": counts["busy"], "other_replies": counts["other"], "invocations": counts["ok"],
    }


# --- nginx -------------------------------------------------------------------------------------------------------
def start_nginx(pod_ip: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        print("==> installing nginx (apt-get)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=False, capture_output=True)
        if not os.path.exists(nginx):
            subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, capture_output=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  upstream agent {{ server {pod_ip}:8080; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 7m;
    location / {{
      proxy_pass http://agent;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "nginx.out", "wb"))
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}{PATH}"), 20, "nginx answers")
    return proc, port


def _answers(url: str) -> bool:
    try:
        req = urllib.request.Request(url, data=BODY, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


# --- cold start ----------------------------------------------------------------------------------------------------
def first_invoke_from_zero(k: Kubectl, ns: str, gateway_port: int) -> float:
    k("scale", "deployment", f"{FUNCTION}-latest", "-n", ns, "--replicas=0")
    wait_until(lambda: not k("get", "pods", "-n", ns, "-l", f"kfn.dev/function={FUNCTION}", "-o", "name").stdout.strip(),
               120, "no pod of the function is left")
    wait_until(lambda: not ready_ips(k, ns), 60, "no ready endpoint is left")
    t0 = time.perf_counter()
    req = urllib.request.Request(f"http://127.0.0.1:{gateway_port}{PATH}", data=BODY, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=180) as r:
        assert r.status == 200, r.status
    return time.perf_counter() - t0


def raw_pod_start(k: Kubectl, ns: str, template: dict[str, Any], i: int) -> float:
    name = f"rawstart-{i}"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "labels": {"bench": "raw"}},
           "spec": template["spec"]}
    t0 = time.perf_counter()
    k("apply", "-f", "-", input=yaml.safe_dump(pod))
    k("wait", "--for=condition=Ready", f"pod/{name}", "-n", ns, "--timeout=180s")
    took = time.perf_counter() - t0
    k("delete", "pod", name, "-n", ns, "--wait=true", "--timeout=120s")
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per path and concurrency")
    p.add_argument("--rounds", type=int, default=3, help="cold-start rounds")
    args = p.parse_args()
    kubectl, kubeconfig = cluster(args.kubeconfig)
    k = Kubectl(kubectl, kubeconfig)
    env, ns, work = bench_namespace(k, kubeconfig, "kfn-bench-gw")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"==> operator and gateway for namespace {ns}", flush=True)
        procs.append(start_operator(ns, work, env))
        fn = {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": FUNCTION, "namespace": ns},
              "spec": {"runtime": "python3.11", "handler": "app.handler", "reservedConcurrency": 1,
                       "code": {"inline": {"files": {"app.py": HANDLER}}}}}
        k("apply", "-f", "-", input=yaml.safe_dump(fn))
        pod_ip = wait_until(lambda: ready_ips(k, ns), 300, "the function has a ready environment", 1)[0]
        gw_port = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kfn.cli.main", "gateway", "--listen", f"127.0.0.1:{gw_port}", "-n", ns,
             "--default-namespace", ns, "--cold-start-timeout", "180"],
            stdout=open(work / "gateway.log", "wb"), stderr=subprocess.STDOUT, env=env))
        wait_until(lambda: _answers(f"http://127.0.0.1:{gw_port}{PATH}"), 60, "the gateway answers")
        nginx, nginx_port = start_nginx(pod_ip, work)
        procs.append(nginx)
        targets = {"direct": (pod_ip, 8080), "gateway": ("127.0.0.1", gw_port), "nginx": ("127.0.0.1", nginx_port)}
        warm: dict[str, dict[str, Any]] = {}
        for clients in (1, 8, 32):
            for name, (host, port) in targets.items():
                r = asyncio.run(load(host, port, clients, args.seconds))
                warm.setdefault(name, {})[f"c{clients}"] = r
                print(f"   {name:8s} c={clients:2d}  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
                      f"{r['throughput_per_s']}/s  (busy replies {r['busy_replies']})", flush=True)
        nginx.terminate()
        nginx.wait(10)
        procs.remove(nginx)

        print("==> cold start: first invoke from zero (gateway) vs raw pod start", flush=True)
        deployment = json.loads(k("get", "deployment", f"{FUNCTION}-latest", "-n", ns, "-o", "json").stdout)
        template = deployment["spec"]["template"]
        template["metadata"]["labels"] = {"bench": "raw"}
        cold, raw = [], []
        for i in range(args.rounds):
            cold.append(first_invoke_from_zero(k, ns, gw_port))
            raw.append(raw_pod_start(k, ns, template, i))
            print(f"   round {i + 1}: first invoke {cold[-1]:.2f} s, raw pod Ready {raw[-1]:.2f} s", flush=True)
        c50, r50 = statistics.median(cold), statistics.median(raw)
        result = {
            "detail": {"warm": warm},
            # summary.py shows keys ending in p50_ms and ratios; the per-path figures stay under "detail"
            "gateway_hop_over_direct": {f"c{c}": {"p50_ms": round(warm["gateway"][f"c{c}"]["p50_ms"] - warm["direct"][f"c{c}"]["p50_ms"], 3)}
                                        for c in (1, 8, 32)},
            "gateway_vs_nginx_throughput_ratio": {f"c{c}": round(warm["gateway"][f"c{c}"]["throughput_per_s"] / warm["nginx"][f"c{c}"]["throughput_per_s"], 3)
                                                  for c in (1, 8, 32)},
            "cold_start": {"first_invoke_from_zero_seconds": round(c50, 3), "raw_pod_ready_seconds": round(r50, 3),
                           "cold_vs_raw_ratio": round(c50 / r50, 3)},
            "goals": {"hop_p50_ms_max": 1.0, "throughput_vs_nginx_min": 0.7, "cold_vs_raw_max": 1.2},
        }
        out = REPO / "bench" / "results" / "gateway.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k_: v for k_, v in result.items() if k_ != "detail"}, indent=2))
        print(f"wrote {out.relative_to(REPO)}")
    finally:
        stop_processes(procs)
        k("delete", "namespace", ns, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
