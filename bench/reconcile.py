"""Benchmark: the operator reconciling N Functions vs a raw ``kubectl apply`` of the same children.

On the test bed (or --kubeconfig): apply N Functions and time until every one
is Ready (observedGeneration current), with the real ``kfn operator`` process.
The baseline, ``kubectl apply`` of the equivalent child objects (built by kfn's
own builders, six per Function) into a fresh namespace, is timed once before
and once after the operator's run. Both sides use ``kubectl apply
--server-side`` (one request per object, as GitOps tools apply).

The ratio is what a user waits for either way:

    (kubectl apply of the N Functions + until the operator has all N Ready, timed from the apply's start)
    / mean(kubectl apply of the 6N children before the operator's run, the same after it)

The shared machine's load drifts over the minutes a run takes, so one baseline
on either side of it would decide the ratio. Each phase starts on the cluster
the first one had: the previous phase's namespace is deleted, and waited for,
first (a thousand more Services, NetworkPolicies and pending pods keep
kube-proxy, kube-router and the scheduler busy and would slow whichever phase
came later). Every phase records its load average at both ends and the test
bed's CPU seconds per process (``phases`` in the JSON), so a figure can be read
against the load it was measured under. Prints a table with the ratio and the
operator's peak RSS, and writes bench/results/reconcile.json.

Then, with everything Ready and nothing changing, the operator's API requests
over whole resync passes (``kfn_kube_api_requests_total`` between two
``kfn_operator_resync_passes_total`` ticks), per Function and pass: reads
and writes (goal: 0 writes when nothing changed). The watch that follows Ready
counts meanwhile how many Function statuses really changed (and which fields):
the controller-manager is still creating the last pods then, so a few do. One
status patch per real change is right, and so is an Event per condition
transition; status patches above that count are not.

The figures of record are on a control-plane-only test bed (what this script
brings up). When the test bed's node runs too (after ``make test``), its
kube-router and kubelet work on every pod, Service and NetworkPolicy of both
sides and the figures drift with them: the script says so, and ``make
cluster-down`` first gives the control-plane-only figures. Each phase also
records the machine's busy share (``machine_busy_share``, from /proc/stat).

    python bench/reconcile.py            # N=1000 (BENCH_N)
    python bench/reconcile.py --n 200    # quicker
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kfn.reconcilers.environment import code_sha256  # noqa: E402
from kfn.resources import EnvironmentInput, Owner, build_environment  # noqa: E402

# The architecture no node has: pods stay Pending even when the test bed runs
# its node, so the figures are the control plane's work, not runtime start-up.
NO_NODE_ARCH = "arm64" if platform.machine() in ("x86_64", "amd64") else "amd64"
HANDLER = "import json\n\ndef handler(event, context):\n    return {'statusCode': 200, 'body': json.dumps(event)}\n"


def function(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "kfn.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": f"bench-{i:04d}"},
        "spec": {
            "runtime": "python3.11",
            "handler": "app.handler",
            "architecture": NO_NODE_ARCH,
            "code": {"inline": {"files": {"app.py": HANDLER}}},
        },
    }


def raw_children(namespace: str, i: int) -> list[dict[str, Any]]:
    """What the operator would create for one Function, minus the owner reference (no owner exists)."""
    fn = function(i)
    spec = {**fn["spec"], "memoryMB": 128, "timeoutSeconds": 3, "ephemeralStorageMB": 512}
    inp = EnvironmentInput(namespace, fn["metadata"]["name"], "$LATEST", Owner("v1", "None", "none", "none"), spec, code_sha256(namespace, spec))
    objs = [o for group in build_environment(inp).values() for o in group]
    for o in objs:
        o["metadata"].pop("ownerReferences", None)
    return objs


class Kubectl:
    def __init__(self, kubectl: str, kubeconfig: str):
        self.kubectl, self.kubeconfig = kubectl, kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args], input=input, capture_output=True, text=True, timeout=1800)
        if check and p.returncode:
            raise SystemExit(f"kubectl {' '.join(args[:3])} failed ({p.returncode}): {p.stderr[-1500:]}")
        return p


def testbed(kubeconfig: str | None) -> tuple[str, str]:
    """(kubectl, kubeconfig): the given cluster, or the control-plane-only test bed brought up."""
    settings = dict(
        line.split("=", 1) for line in subprocess.run(["bash", str(REPO / "testbed/env.sh"), "print"], capture_output=True, text=True, check=True).stdout.split("\n") if "=" in line
    )
    kubectl = settings.get("KUBECTL") or "kubectl"
    if kubeconfig:
        return kubectl, kubeconfig  # another cluster: no test-bed processes to count
    global TESTBED_PIDS
    TESTBED_PIDS = Path(settings.get("RUN_DIR") or "/var/lib/kfn-testbed") / "pids"  # KFN_TESTBED_RUN moves it
    print("==> test bed (control plane only): testbed/up.sh", flush=True)
    out = subprocess.run(["bash", str(REPO / "testbed/up.sh")], env={**os.environ, "CONTROL_PLANE_ONLY": "1"}, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"testbed/up.sh failed:\n{out.stderr[-3000:]}")
    last = out.stdout.strip().splitlines()[-1]
    return kubectl, last.removeprefix("export KUBECONFIG=")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time a process has used (all its threads); with *children*, also that of the child
    processes it has waited for (kube-router's iptables-restore)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return used / os.sysconf("SC_CLK_TCK")


# The test bed's control-plane and node processes (testbed/up.sh writes their pid files there); set by
# testbed() when the run is on the test bed, None on another cluster.
TESTBED_PIDS: Path | None = None


def testbed_cpu_seconds() -> dict[str, float]:
    """CPU seconds each test-bed process (kube-apiserver, etcd, controllers, kube-proxy, kube-router …) and the
    children it waited for have used so far; empty on another cluster. Differences over a phase say where the machine's time went."""
    out = {}
    for pidfile in sorted(TESTBED_PIDS.glob("*.pid")) if TESTBED_PIDS is not None and TESTBED_PIDS.is_dir() else []:
        try:
            out[pidfile.stem] = cpu_seconds(int(pidfile.read_text().split()[0]), children=True)
        except (OSError, ValueError, IndexError):
            continue  # a component that is not running (or another user's file): nothing to count
    return out


# Components of the test bed's node: they work on every pod, Service and NetworkPolicy both sides create.
NODE_COMPONENTS = ("kubelet", "kube-proxy", "kube-router", "containerd")


def node_running() -> list[str]:
    """The test bed's node components that run now (none on a control-plane-only test bed)."""
    return sorted(p for p, _ in testbed_cpu_seconds().items() if p in NODE_COMPONENTS)


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, over every CPU (``/proc/stat``): busy is all but
    idle and I/O wait (steal included: time another guest took)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), sum(values) / os.sysconf("SC_CLK_TCK")


class Phase:
    """Wall time, load average at both ends, the machine's busy share and the test bed's CPU seconds of one phase
    of the run."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Phase:
        self.load_start, self.cpu_start, self.t0 = os.getloadavg()[0], testbed_cpu_seconds(), time.monotonic()
        self.machine_start = machine_cpu()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self.t0
        end = testbed_cpu_seconds()
        self.cpu = {p: round(end[p] - self.cpu_start[p], 1) for p in end if p in self.cpu_start}
        self.load_end = os.getloadavg()[0]
        busy, every = (end - start for end, start in zip(machine_cpu(), self.machine_start))
        self.busy = busy / every if every else 0.0

    def record(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "load_average_start_end": [round(self.load_start, 1), round(self.load_end, 1)],
                "machine_busy_share": round(self.busy, 2), "testbed_cpu_seconds": self.cpu}

    def line(self) -> str:
        busiest = sorted(self.cpu.items(), key=lambda kv: -kv[1])[:4]
        cpu = ", ".join(f"{p} {c:.0f}" for p, c in busiest)
        return (f"load average {self.load_start:.1f} -> {self.load_end:.1f}, machine {self.busy:.0%} busy"
                + (f"; CPU s: {cpu}" if cpu else ""))


def is_ready(fn: dict[str, Any]) -> bool:
    """Ready=True at the Function's current generation."""
    st = fn.get("status") or {}
    return st.get("observedGeneration") == fn["metadata"].get("generation") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def status_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two statuses of a Function: top-level fields by name, conditions as
    ``conditions[Type]`` (status, reason or message). Said next to the idle passes' writes, it tells a write
    that reported a real change from one that changed nothing."""
    out = [k for k in sorted(set(old) | set(new)) if k != "conditions" and old.get(k) != new.get(k)]
    key = lambda c: (c.get("status"), c.get("reason"), c.get("message"))  # noqa: E731
    before = {c.get("type"): key(c) for c in old.get("conditions") or []}
    after = {c.get("type"): key(c) for c in new.get("conditions") or []}
    out += [f"conditions[{t}]" for t in sorted(set(before) | set(after), key=str) if before.get(t) != after.get(t)]
    return out


CHANGED = "(statuses changed)"  # the count of watch events that changed a status at all


class ReadyWatch:
    """How many Functions of a namespace are Ready, followed with one watch (a list, then its events).

    The measurement must not load what it measures: polling ``kubectl get -o json`` once a second
    started a kubectl process and listed, encoded and decoded every Function each time (tens of CPU
    seconds over a run at N = 1,000, on the machine the operator and the API server share); the raw
    phases carry no such load. A watch sends each change once."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        from kfn import k8s  # the operator's own client: kubeconfig credentials, JSON lines

        self.k8s, self.namespace = k8s, namespace
        k8s.configure(kubeconfig, pool_size=2)
        self.ready: dict[str, bool] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.recording: collections.Counter[str] | None = None  # what changed in statuses, while recording
        self.changed = threading.Condition()
        self.failure: BaseException | None = None
        threading.Thread(target=self._follow, name="ready-watch", daemon=True).start()

    def _follow(self) -> None:
        try:
            version = ""
            while True:
                if not version:  # first, or the watch's version expired or its connection failed: list again
                    try:
                        items, version = self.k8s.list_with_version("Function", self.namespace)
                    except self.k8s.Unreachable:
                        time.sleep(1)  # a restarting API server: try again
                        continue
                    with self.changed:
                        for f in items:
                            self._update(f)  # a change missed between two watches still counts
                        for gone in set(self.ready) - {f["metadata"]["name"] for f in items}:
                            self.ready.pop(gone, None)
                            self.status.pop(gone, None)
                        self.changed.notify_all()
                try:
                    for etype, fn in self.k8s.watch("Function", self.namespace, version):
                        version = str((fn.get("metadata") or {}).get("resourceVersion") or version)
                        if etype == "BOOKMARK":
                            continue
                        with self.changed:
                            if etype == "DELETED":
                                self.ready.pop(fn["metadata"]["name"], None)
                                self.status.pop(fn["metadata"]["name"], None)
                            else:
                                self._update(fn)
                            self.changed.notify_all()
                    # the server ended the watch (its timeout): resume from the last version seen
                except (self.k8s.Gone, self.k8s.Unreachable):
                    version = ""
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            with self.changed:
                self.failure = e
                self.changed.notify_all()

    def _update(self, fn: dict[str, Any]) -> None:
        """Take a Function's current state (the lock held); while recording, count what changed in its status."""
        name, status = fn["metadata"]["name"], fn.get("status") or {}
        self.ready[name] = is_ready(fn)
        if self.recording is not None and name in self.status:
            what = status_changes(self.status[name], status)
            self.recording.update(what)
            self.recording[CHANGED] += bool(what)
        self.status[name] = status

    def check(self) -> None:
        """Raise if the watch has died (its figures would be partial)."""
        if self.failure is not None:
            raise SystemExit(f"watching Functions failed: {self.failure!r}")

    def record(self) -> None:
        """From now on, count what changes in the Functions' statuses (:func:`status_changes`)."""
        with self.changed:
            self.recording = collections.Counter()

    def recorded(self) -> dict[str, int]:
        """What changed since :meth:`record`, by status field or condition, and stop counting."""
        self.check()
        with self.changed:
            out, self.recording = dict(self.recording or {}), None
        return out

    def count(self) -> int:
        with self.changed:
            return sum(self.ready.values())

    def wait(self, n: int, timeout: float) -> int:
        """Block until *n* are Ready or *timeout* seconds pass (progress every 10 s); returns the count."""
        start = time.monotonic()
        last_print = start
        with self.changed:
            while (ready := sum(self.ready.values())) < n:
                self.check()
                now = time.monotonic()
                if now - start > timeout:
                    break
                if now - last_print >= 10:
                    print(f"    {ready}/{n} Ready after {now - start:.0f}s of waiting", flush=True)
                    last_print = now
                self.changed.wait(timeout=1.0)
            return ready


WRITE_VERBS = ("create", "patch", "update", "delete")


def scrape(port: int) -> tuple[float, dict[str, float]]:
    """(completed resync passes, API requests by verb) from the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    passes, by_verb = 0.0, {}
    for line in text.splitlines():
        if line.startswith("kfn_operator_resync_passes_total "):
            passes = float(line.split()[-1])
        elif line.startswith("kfn_kube_api_requests_total{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1 : line.rindex("}")].split(","))
            verb = f"{labels['verb'].strip(chr(34))} {labels['resource'].strip(chr(34))}"
            by_verb[verb] = by_verb.get(verb, 0.0) + float(line.split()[-1])
    return passes, by_verb


def idle_resync_requests(port: int, passes: int, n: int, interval: float, op: subprocess.Popen[bytes],
                         watch: ReadyWatch) -> dict[str, Any]:
    """API requests per Function per resync pass while nothing changes (measured from pass tick to pass tick),
    and what changed in the Functions' statuses meanwhile (a status write is right when something did)."""

    def next_pass(after: float) -> tuple[float, dict[str, float]]:
        deadline = time.monotonic() + interval * 3 + 600
        while time.monotonic() < deadline and op.poll() is None:
            watch.check()
            done, by_verb = scrape(port)
            if done > after:
                return done, by_verb
            time.sleep(0.5)  # polling the pass counter, with a deadline
        raise SystemExit("no resync pass completed while idle")

    start, before = next_pass(scrape(port)[0])  # a whole pass begins after this tick
    watch.record()
    end, after = start, before
    for _ in range(passes):
        end, after = next_pass(end)
    counted = end - start
    changes = watch.recorded()
    delta = {v: after.get(v, 0) - before.get(v, 0) for v in sorted(set(after) | set(before))}
    delta = {v: d for v, d in delta.items() if d}
    per = lambda verbs: round(sum(d for v, d in delta.items() if v.split()[0] in verbs) / n / counted, 3)  # noqa: E731
    return {
        "passes": counted,
        "reads_per_function": per(("get", "list")),
        "writes_per_function": per(WRITE_VERBS),
        "by_verb_and_resource": {v: round(d / n / counted, 3) for v, d in delta.items()},
        "status_patches_per_function": round(delta.get("patch functions/status", 0) / n / counted, 3),
        "statuses_changed_per_function": round(changes.pop(CHANGED, 0) / n / counted, 3),
        "status_changes_per_function": {what: round(c / n / counted, 3) for what, c in sorted(changes.items())},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", "1000")))
    p.add_argument("--resync-seconds", type=float, default=30, help="the operator's resync interval (its default: 30)")
    p.add_argument("--idle-passes", type=int, default=2, help="resync passes to measure once everything is Ready")
    p.add_argument("--settle-seconds", type=float, default=0,
                   help="wait this long after all are Ready before measuring idle passes (e.g. 620: past the "
                        "Deployments' 600 s progress deadline, whose transitions are real changes)")
    p.add_argument("--skip-raw", action="store_true", help="measure the operator only (no raw kubectl baseline)")
    p.add_argument("--kubeconfig", default=None, help="another cluster (default: the control-plane-only test bed)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default=str(REPO / "bench/results/reconcile.json"))
    args = p.parse_args()
    kubectl, kubeconfig = testbed(args.kubeconfig)
    k = Kubectl(kubectl, kubeconfig)
    k("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    k("wait", "--for=condition=Established", "--timeout=60s", "crd/functions.kfn.dev")
    tag = secrets.token_hex(3)
    ns_op, ns_raw, ns_raw2 = f"kfn-bench-op-{tag}", f"kfn-bench-raw-{tag}", f"kfn-bench-raw2-{tag}"
    namespaces = (ns_op,) if args.skip_raw else (ns_op, ns_raw, ns_raw2)
    for ns in namespaces:
        k("create", "namespace", ns)
    tmp = Path(tempfile.mkdtemp(prefix="kfn-bench-"))
    result: dict[str, Any] = {"n": args.n, "node_components_running": node_running()}
    if result["node_components_running"]:
        print(f"note: the test bed's node runs ({', '.join(result['node_components_running'])}): kube-router's "
              "NetworkPolicy work and the kubelet's pods load every phase, and the figures drift with them. The figures "
              "of record are on a control-plane-only test bed: `make cluster-down` first.", flush=True)
    op = None
    raw_seconds: list[float] = []
    phases: dict[str, Any] = {}
    raw_objects = [[o for i in range(args.n) for o in raw_children(ns, i)] for ns in (ns_raw, ns_raw2)]

    def raw_apply(when: str, objs: list[dict[str, Any]], ns: str) -> None:
        """The baseline: kubectl apply of the children kfn would create, timed."""
        (tmp / f"children-{ns}.yaml").write_text(yaml.safe_dump_all(objs))
        print(f"==> raw ({when}): kubectl apply of the {len(objs)} equivalent child objects", flush=True)
        with Phase(f"raw {when}") as phase:
            k("apply", "--server-side", "-n", ns, "-f", str(tmp / f"children-{ns}.yaml"))
        raw_seconds.append(phase.seconds)
        phases[phase.name] = phase.record()
        print(f"    {raw_seconds[-1]:.1f}s ({phase.line()})", flush=True)

    def clear(ns: str) -> None:
        """Delete a measured namespace and wait until it is gone: the next phase starts on the cluster the first
        one had, not one holding a thousand more Services, NetworkPolicies and pending pods (which kube-proxy,
        kube-router and the scheduler keep working on)."""
        print(f"==> deleting {ns} before the next phase", flush=True)
        with Phase(f"delete {ns}") as phase:
            k("delete", "namespace", ns, "--wait=true", "--timeout=900s", check=False)
        phases[phase.name] = phase.record()
        print(f"    {phase.seconds:.0f}s ({phase.line()})", flush=True)

    try:
        if not args.skip_raw:
            raw_apply("before the operator", raw_objects[0], ns_raw)
            clear(ns_raw)
        # 1. The operator.
        live, metrics = free_port(), free_port()
        log = open(tmp / "operator.log", "wb")
        op = subprocess.Popen(
            [sys.executable, "-m", "kfn.cli.main", "operator", "--standalone", "-n", ns_op, "--workers", str(args.workers),
             "--liveness", f"http://127.0.0.1:{live}/healthz", "--metrics-port", str(metrics),
             "--resync-seconds", str(args.resync_seconds)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG": kubeconfig},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{live}/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or op.poll() is not None:
                    raise SystemExit(f"operator did not start; log in {tmp / 'operator.log'}")
                time.sleep(0.3)
        (tmp / "functions.yaml").write_text(yaml.safe_dump_all([function(i) for i in range(args.n)]))
        print(f"==> operator: applying {args.n} Functions and waiting until all are Ready", flush=True)
        watch = ReadyWatch(kubeconfig, ns_op)
        op_phase = Phase("operator").__enter__()
        t0 = op_phase.t0
        k("apply", "--server-side", "-n", ns_op, "-f", str(tmp / "functions.yaml"))
        t_apply_fn = time.monotonic() - t0
        ready = watch.wait(args.n, args.timeout - t_apply_fn)
        if ready < args.n:
            raise SystemExit(f"only {ready}/{args.n} Ready after {args.timeout}s")
        op_phase.__exit__()
        t_op = op_phase.seconds
        phases["operator"] = op_phase.record()
        rss = peak_rss_mb(op.pid)
        cpu = cpu_seconds(op.pid)
        print(f"    all {args.n} Ready after {t_op:.1f}s; operator peak RSS {rss:.0f} MB, CPU {cpu:.1f}s since its start "
              f"just before the phase ({op_phase.line()})",
              flush=True)
        _, by_verb = scrape(metrics)
        result["reconcile_requests_per_function"] = {v: round(d / args.n, 2) for v, d in sorted(by_verb.items())}
        result["operator_cpu_seconds"] = round(cpu, 1)
        print(f"    API requests per Function until Ready: {result['reconcile_requests_per_function']}", flush=True)
        if args.settle_seconds:
            print(f"    settling {args.settle_seconds:.0f}s before measuring idle passes", flush=True)
            time.sleep(args.settle_seconds)  # a deliberate wait, not a synchronisation
        idle = idle_resync_requests(metrics, args.idle_passes, args.n, args.resync_seconds, op, watch)
        print(f"    idle resync, per Function and pass: {idle['reads_per_function']} reads, {idle['writes_per_function']} writes "
              f"{idle['by_verb_and_resource']}", flush=True)
        print(f"    statuses that changed meanwhile, per Function and pass: {idle['statuses_changed_per_function']} "
              f"{idle['status_changes_per_function']}", flush=True)
        result["idle_resync"] = idle
        result["operator_peak_rss_mb_after_idle"] = round(peak_rss_mb(op.pid), 1)
        op.kill()  # measured; a graceful stop with a full queue can take long and proves nothing here
        op.wait(30)
        if not args.skip_raw:
            clear(ns_op)

        # 2. The same children applied raw, again (the mean of both baselines is the one compared with).
        if not args.skip_raw:
            raw_apply("after the operator", raw_objects[1], ns_raw2)
        t_raw = sum(raw_seconds) / len(raw_seconds) if raw_seconds else float("nan")

        result.update(
            {
                "objects_per_function": len(raw_objects[0]) // args.n,
                "raw_kubectl_apply_seconds_before_and_after": [round(x, 2) for x in raw_seconds],
                "operator_seconds": round(t_op, 2),
                "operator_apply_functions_seconds": round(t_apply_fn, 2),
                "raw_kubectl_apply_seconds": round(t_raw, 2),
                "ratio_operator_to_raw": round(t_op / t_raw, 2),
                "functions_per_second": round(args.n / t_op, 1),
                "operator_peak_rss_mb": round(rss, 1),
                "workers": args.workers,
                "phases": phases,
            }
        )
    finally:
        if op is not None and op.poll() is None:
            op.kill()
        for ns in namespaces:
            k("delete", "namespace", ns, "--wait=false", check=False)
    rows = [
        ("Functions", str(args.n)),
        ("child objects per Function", str(result["objects_per_function"])),
        ("operator: apply + all Ready (s)", f"{result['operator_seconds']:.1f}"),
        ("  of which kubectl apply of Functions (s)", f"{result['operator_apply_functions_seconds']:.1f}"),
        ("raw kubectl apply of the children, mean (s)", f"{result['raw_kubectl_apply_seconds']:.1f}"),
        ("  before / after the operator (s)", " / ".join(f"{x:.0f}" for x in result["raw_kubectl_apply_seconds_before_and_after"])),
        ("ratio operator / raw", f"{result['ratio_operator_to_raw']:.2f}"),
        ("Functions reconciled per second", f"{result['functions_per_second']:.1f}"),
        ("operator peak RSS (MB)", f"{result['operator_peak_rss_mb']:.0f}"),
        ("idle resync: reads per Function per pass", f"{result['idle_resync']['reads_per_function']}"),
        ("idle resync: writes per Function per pass", f"{result['idle_resync']['writes_per_function']}"),
        ("  of which Function status patches", f"{result['idle_resync']['status_patches_per_function']}"),
        ("  Function statuses that changed meanwhile", f"{result['idle_resync']['statuses_changed_per_function']}"),
        ("operator peak RSS after idle passes (MB)", f"{result['operator_peak_rss_mb_after_idle']:.0f}"),
    ]
    for name, phase in result.get("phases", {}).items():
        if name.startswith("delete "):
            continue
        start, end = phase["load_average_start_end"]
        rows.append((f"load average, {name} (start -> end)", f"{start:.1f}->{end:.1f}"))
    width = max(len(r[0]) for r in rows)
    print("\nreconcile benchmark")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>8}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
