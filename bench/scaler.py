"""Benchmark: kfn's built-in scaler against a raw Deployment, on the same pod template, in one run.

On the full test bed (or --kubeconfig): the real ``kfn operator``, ``kfn scaler`` and ``kfn gateway --scaler-url``
(host processes, scoped to a fresh namespace). Side by side:

* **burst → scale decision**: N callers invoke a function at zero at once; the time from the first request sent to
  the version Deployment's ``spec.replicas`` leaving 0 as a watch sees it (HPA syncs every 15 s and KEDA polls
  every 30 s by default: their floor for the same step), and the scaler's own push → decision time
  (``kfn_scaler_decision_seconds``);
* **0 → N Ready**: from the first request to N ready environments (the function's EndpointSlices), against
  ``kubectl scale --replicas=N`` of a raw Deployment with the same pod template from 0 to N ready;
* **first invoke from zero** (one caller) against one raw pod of the same template becoming Ready.

N defaults to 50, capped by what the node can hold (its allocatable CPU minus what is requested, over the pod's
requests: a 2-core test bed holds about 10 function pods); the cap is printed and recorded.

Writes bench/results/scaler.json.

    python bench/scaler.py [--n 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

from gateway import bench_namespace, cluster, start_operator, stop_processes, wait_until  # noqa: E402
from reconcile import Kubectl, free_port  # noqa: E402

HANDLER = ("import time\n\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n"
           "    return {'ok': True}\n")


def invoke(port: int, name: str, event: dict[str, Any], timeout: float = 300) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations",
                                 data=json.dumps(event).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def cpu_millis(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def room_for(k: Kubectl, template: dict[str, Any]) -> int:
    """Pods of *template* the node can still place (CPU requests)."""
    node = json.loads(k("get", "nodes", "-o", "json").stdout)["items"][0]
    allocatable = cpu_millis(node["status"]["allocatable"]["cpu"])
    described = k("describe", "node", node["metadata"]["name"]).stdout
    m = re.search(r"Allocated resources:.*?cpu\s+(\d+m?)", described, re.S)
    used = cpu_millis(m.group(1)) if m else 0
    per_pod = sum(cpu_millis((c.get("resources") or {}).get("requests", {}).get("cpu", "0m"))
                  for c in template["spec"]["containers"])
    return max(0, (allocatable - used) // max(1, per_pod))


def ready_endpoints(k: Kubectl, ns: str, service: str) -> int:
    out = json.loads(k("get", "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={service}",
                       "-o", "json").stdout)
    return sum(1 for s in out["items"] for ep in s.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready"))


def first_scale_seen(kubeconfig: str, ns: str, deployment: str, found: dict[str, float], stop: threading.Event) -> None:
    """Timestamp (perf_counter) of the first watch event with the Deployment's replicas above 0."""
    from kfn import k8s

    k8s.configure(kubeconfig)
    rv = k8s.list_with_version("Deployment", ns, None)[1]
    while not stop.is_set() and "t" not in found:
        for _, obj in k8s.watch("Deployment", ns, rv, None):
            if obj["metadata"]["name"] == deployment and int((obj.get("spec") or {}).get("replicas") or 0) > 0:
                found["t"] = time.perf_counter()
                return
            rv = obj["metadata"].get("resourceVersion") or rv


class PodTimeline:
    """Watches pods matching a label selector from a thread; records (perf_counter) when each pod is first seen
    and when it is first seen Ready, so a first invoke's time splits into: request -> pod exists (the scale-up
    path: kfn's part), pod exists -> Ready (the kubelet, as for a raw pod), Ready -> answer (the gateway)."""

    def __init__(self, kubeconfig: str, ns: str, selector: str) -> None:
        self.created: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self._stop = threading.Event()
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(kubeconfig, ns, selector), daemon=True)
        self._thread.start()
        if not self._open.wait(30):
            raise SystemExit("the pod watch did not open in 30 s")

    def _run(self, kubeconfig: str, ns: str, selector: str) -> None:
        from kfn import k8s

        k8s.configure(kubeconfig)
        rv = k8s.list_with_version("Pod", ns, selector)[1]
        self._open.set()
        while not self._stop.is_set():
            for etype, obj in k8s.watch("Pod", ns, rv, selector, timeout_seconds=60):
                rv = obj["metadata"].get("resourceVersion") or rv
                if etype not in ("ADDED", "MODIFIED"):
                    continue
                now, name = time.perf_counter(), obj["metadata"]["name"]
                self.created.setdefault(name, now)
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (obj.get("status") or {}).get("conditions") or []):
                    self.ready.setdefault(name, now)
                if self._stop.is_set():
                    return

    def first(self) -> tuple[float, float]:
        """(first pod seen, first pod Ready) as perf_counter values (nan when not seen)."""
        nan = float("nan")
        return (min(self.created.values(), default=nan), min(self.ready.values(), default=nan))

    def stop(self) -> None:
        self._stop.set()


def first_invoke(k: Kubectl, kubeconfig: str, ns: str, fn: str, port: int) -> dict[str, float]:
    """One invoke of *fn* at zero, split into request -> pod exists -> pod Ready -> answer (seconds)."""
    at_zero(k, ns, fn)
    timeline = PodTimeline(kubeconfig, ns, f"kfn.dev/function={fn}")
    try:
        t0 = time.perf_counter()
        status = invoke(port, fn, {})
        t_answer = time.perf_counter()
    finally:
        timeline.stop()
    if status != 200:
        raise SystemExit(f"the first invoke of {fn} answered {status}")
    created, ready = timeline.first()
    return {"total": t_answer - t0, "to_pod_created": created - t0, "pod_created_to_ready": ready - created,
            "ready_to_answer": t_answer - ready}


def raw_first_invoke(k: Kubectl, kubeconfig: str, ns: str, template: dict[str, Any], i: int) -> dict[str, float]:
    """One raw pod of the same template: apply -> pod exists -> Ready (seconds), deleted and gone after."""
    name = f"rawstart-{i}"
    timeline = PodTimeline(kubeconfig, ns, f"bench=raw-{i}")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"bench": f"raw-{i}"}},
           "spec": template["spec"]}
    try:
        t0 = time.perf_counter()
        k("apply", "-f", "-", input=yaml.safe_dump(pod))
        wait_until(lambda: timeline.ready, 300, f"the raw pod {name} is Ready", 0.05)
    finally:
        timeline.stop()
    created, ready = timeline.first()
    k("delete", "pod", name, "-n", ns, "--wait=true", "--timeout=180s")
    return {"total": ready - t0, "to_pod_created": created - t0, "pod_created_to_ready": ready - created}


def load_average() -> float:
    return round(float(Path("/proc/loadavg").read_text().split()[0]), 2)


def at_zero(k: Kubectl, ns: str, fn: str) -> None:
    wait_until(lambda: json.loads(k("get", "deployment", f"{fn}-latest", "-n", ns, "-o", "json").stdout)
               ["spec"].get("replicas") == 0 and not k("get", "pods", "-n", ns, "-l", f"kfn.dev/function={fn}",
                                                       "-o", "name").stdout.strip(), 300, f"{fn} is at zero", 0.5)


def burst_round(k: Kubectl, kubeconfig: str, ns: str, fn: str, port: int, n: int) -> dict[str, float]:
    at_zero(k, ns, fn)
    found: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=first_scale_seen, args=(kubeconfig, ns, f"{fn}-latest", found, stop), daemon=True)
    watcher.start()
    time.sleep(1)  # the watch is open
    pool = concurrent.futures.ThreadPoolExecutor(n)
    t0 = time.perf_counter()
    futures = [pool.submit(invoke, port, fn, {"sleep": 60}) for _ in range(n)]  # demand holds until N are up
    wait_until(lambda: ready_endpoints(k, ns, f"{fn}-latest") >= n, 600, f"{n} ready environments of {fn}", 0.2)
    t_ready = time.perf_counter()
    stop.set()
    pool.shutdown(wait=False, cancel_futures=True)
    for f in futures:
        f.cancel()
    return {"decision_seen_seconds": found.get("t", float("nan")) - t0, "ready_seconds": t_ready - t0}


def raw_round(k: Kubectl, ns: str, template: dict[str, Any], n: int) -> float:
    name = "raw-scale"
    labels = {"bench": "raw-scale"}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
           "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": template["spec"]}}}
    k("apply", "-f", "-", input=yaml.safe_dump(dep))
    wait_until(lambda: not k("get", "pods", "-n", ns, "-l", "bench=raw-scale", "-o", "name").stdout.strip(), 300,
               "the raw Deployment is at zero", 0.5)
    t0 = time.perf_counter()
    k("scale", "deployment", name, "-n", ns, f"--replicas={n}")
    wait_until(lambda: (json.loads(k("get", "deployment", name, "-n", ns, "-o", "json").stdout).get("status") or {})
               .get("readyReplicas", 0) >= n, 600, f"{n} ready raw pods", 0.2)
    took = time.perf_counter() - t0
    k("scale", "deployment", name, "-n", ns, "--replicas=0")
    # its terminating pods would eat the CPU of whatever is measured next
    wait_until(lambda: not k("get", "pods", "-n", ns, "-l", "bench=raw-scale", "-o", "name").stdout.strip(), 300,
               "the raw Deployment is back at zero", 0.5)
    return took


def decision_seconds(scaler_port: int) -> float | None:
    """Mean push → decision time from the scaler's histogram."""
    return histogram_mean(scaler_port, "kfn_scaler_decision_seconds")


def write_seconds(scaler_port: int) -> float | None:
    """Mean time of the scaler's scale-subresource write (decision → replicas set in the API)."""
    return histogram_mean(scaler_port, "kfn_scaler_write_seconds")


def histogram_mean(scaler_port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{scaler_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = re.search(rf"^{name}_sum (\S+)", text, re.M)
    count = re.search(rf"^{name}_count (\S+)", text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1))


def write_result(result: dict[str, Any]) -> None:
    out = REPO / "bench" / "results" / "scaler.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k_: v for k_, v in result.items() if k_ != "detail"}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--n", type=int, default=50, help="environments to scale to (capped by what the node holds)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    kubectl, kubeconfig = cluster(args.kubeconfig)
    k = Kubectl(kubectl, kubeconfig)
    env, ns, work = bench_namespace(k, kubeconfig, "kfn-bench-sc")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"==> operator, scaler and gateway for namespace {ns} (logs in {work})", flush=True)
        procs.append(start_operator(ns, work, env))
        sc_port, gw_port = free_port(), free_port()
        # Lambda's own burst (1,000, +100/s): the bench measures the machinery, not a throttle
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kfn.cli.main", "scaler", "--listen", f"127.0.0.1:{sc_port}", "-n", ns,
             "--burst-size", "1000", "--burst-rate", "100", "--idle-seconds", "4", "--tick", "0.1"],
            stdout=open(work / "scaler.log", "wb"), stderr=subprocess.STDOUT, env=env))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kfn.cli.main", "gateway", "--listen", f"127.0.0.1:{gw_port}", "-n", ns,
             "--default-namespace", ns, "--cold-start-timeout", "600", "--scaler-url", f"http://127.0.0.1:{sc_port}"],
            stdout=open(work / "gateway.log", "wb"), stderr=subprocess.STDOUT, env=env))
        # idle 4 s (the scaler's flag, not spec.scaling: a shared test bed's CRDs may be another branch's):
        # each function goes back to zero between rounds
        for name in ("scburst", "scfirst"):
            k("apply", "-f", "-", input=yaml.safe_dump(
                {"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name, "namespace": ns},
                 "spec": {"runtime": "python3.11", "handler": "app.handler", "timeoutSeconds": 120,
                          "code": {"inline": {"files": {"app.py": HANDLER}}}}}))
        wait_until(lambda: k("get", "deployment", "scburst-latest", "-n", ns, check=False).returncode == 0, 120,
                   "the function's Deployment exists")
        template = json.loads(k("get", "deployment", "scburst-latest", "-n", ns, "-o", "json").stdout)["spec"]["template"]
        at_zero(k, ns, "scburst")
        n = min(args.n, room_for(k, template))
        if n < args.n:
            print(f"   the node holds {n} more function pods (CPU requests): N = {n} instead of {args.n}", flush=True)
        if n < 2:
            # A full (shared) node: the decision needs no pod to start; measure it once, leave the rest unmeasured.
            print("   no room for function pods now: measuring burst -> decision only", flush=True)
            found: dict[str, float] = {}
            stop = threading.Event()
            threading.Thread(target=first_scale_seen, args=(kubeconfig, ns, "scburst-latest", found, stop),
                             daemon=True).start()
            time.sleep(1)  # the watch is open
            pool = concurrent.futures.ThreadPoolExecutor(3)
            t0 = time.perf_counter()
            for _ in range(3):
                pool.submit(invoke, gw_port, "scburst", {}, 5)
            wait_until(lambda: "t" in found, 30, "the scale decision is seen")
            pool.shutdown(wait=False, cancel_futures=True)
            result = {"detail": {"n": 0, "n_asked": args.n, "note": "node full: 0 -> N and first invoke not measured",
                                 "hpa_sync_period_seconds": 15, "keda_polling_interval_seconds": 30},
                      "burst_to_decision": {"seen_in_api_seconds": round(found["t"] - t0, 4),
                                            "scaler_push_to_decision_seconds":
                                                round(decision_seconds(sc_port) or float("nan"), 6)},
                      "goals": {"burst_to_decision_seconds_max": 0.1}}
            write_result(result)
            return 0
        kfn_rounds, raw_rounds, first, raw_first, loads = [], [], [], [], []
        # Rounds alternate which side goes first (a shared machine's load drifts); each side starts with the other
        # at zero and its own pods gone.
        for i in range(args.rounds):
            loads.append(load_average())
            for side in (("kfn", "raw") if i % 2 == 0 else ("raw", "kfn")):
                if side == "kfn":
                    kfn_rounds.append(burst_round(k, kubeconfig, ns, "scburst", gw_port, n))
                    at_zero(k, ns, "scburst")
                else:
                    raw_rounds.append(raw_round(k, ns, template, n))
            print(f"   round {i + 1} (load {loads[-1]}): kfn 0 -> {n} ready {kfn_rounds[-1]['ready_seconds']:.2f} s "
                  f"(decision seen after {1000 * kfn_rounds[-1]['decision_seen_seconds']:.0f} ms), raw Deployment "
                  f"{raw_rounds[-1]:.2f} s", flush=True)
        for i in range(args.rounds):
            loads.append(load_average())
            for side in (("kfn", "raw") if i % 2 == 0 else ("raw", "kfn")):
                if side == "kfn":
                    first.append(first_invoke(k, kubeconfig, ns, "scfirst", gw_port))
                    at_zero(k, ns, "scfirst")
                else:
                    raw_first.append(raw_first_invoke(k, kubeconfig, ns, template, i))
            f, r = first[-1], raw_first[-1]
            print(f"   first invoke from zero (load {loads[-1]}) {f['total']:.2f} s = {f['to_pod_created']:.2f} to the "
                  f"pod, {f['pod_created_to_ready']:.2f} to Ready, {f['ready_to_answer']:.2f} to the answer; raw pod "
                  f"Ready {r['total']:.2f} s = {r['to_pod_created']:.2f} to the pod, {r['pod_created_to_ready']:.2f} "
                  "to Ready", flush=True)
        kfn_ready = statistics.median(r["ready_seconds"] for r in kfn_rounds)
        raw_ready = statistics.median(raw_rounds)
        seen = statistics.median(r["decision_seen_seconds"] for r in kfn_rounds)

        def med(rows: list[dict[str, float]], field: str) -> float:
            return round(statistics.median(r[field] for r in rows), 3)

        result = {
            "detail": {"n": n, "n_asked": args.n, "kfn_rounds": kfn_rounds, "raw_rounds": raw_rounds,
                       "first_invoke": first, "raw_first": raw_first, "load_average_1m": loads,
                       "hpa_sync_period_seconds": 15, "keda_polling_interval_seconds": 30},
            "zero_to_n_ready": {"kfn_seconds": round(kfn_ready, 3), "raw_deployment_seconds": round(raw_ready, 3),
                                "kfn_vs_raw_ratio": round(kfn_ready / raw_ready, 3)},
            "burst_to_decision": {"seen_in_api_seconds": round(seen, 4),
                                  "scaler_push_to_decision_seconds": round(decision_seconds(sc_port) or float("nan"), 6),
                                  "scaler_scale_write_seconds": round(write_seconds(sc_port) or float("nan"), 4)},
            "first_invoke_from_zero": {"kfn_seconds": med(first, "total"), "raw_pod_ready_seconds": med(raw_first, "total"),
                                       "kfn_vs_raw_ratio": round(med(first, "total") / med(raw_first, "total"), 3),
                                       "kfn_to_pod_created_seconds": med(first, "to_pod_created"),
                                       "raw_to_pod_created_seconds": med(raw_first, "to_pod_created"),
                                       "kfn_pod_created_to_ready_seconds": med(first, "pod_created_to_ready"),
                                       "raw_pod_created_to_ready_seconds": med(raw_first, "pod_created_to_ready"),
                                       "kfn_ready_to_answer_seconds": med(first, "ready_to_answer")},
            "goals": {"zero_to_n_vs_raw_max": 1.2, "burst_to_decision_seconds_max": 0.1},
        }
        write_result(result)
    finally:
        stop_processes(procs)
        k("delete", "namespace", ns, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
