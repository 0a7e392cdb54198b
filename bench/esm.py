"""Benchmark: a Redis Streams event source mapping through kfn against redis-py's own consumer group, same run.

On the full test bed (tests/e2e/esmrig.py's world: a Redis pod, the real operator and gateway on the host, a poller
pod per mapping, one function pod):

* kfn: N records XADDed to a stream, then a mapping (batchSize B, TRIM_HORIZON) to a no-op function (--memory MB) → records/s from
  the first record acknowledged to the last (the consumer group's ``entries-read``, ``lag`` and pending count);
* baseline: the same N records read by redis-py on the host with XREADGROUP (COUNT B) + XACK, one consumer → records/s;
* iterator age under a steady load: R records/s XADDed for S seconds while the mapping runs; the poller's
  ``kfn_esm_iterator_age_milliseconds`` sampled from its /metrics (p50, max), and the poller process's resident
  memory (the price of one Deployment per mapping).

Writes bench/results/esm.json (ratio kfn/baseline).

    python bench/esm.py [--records 20000] [--batch 100] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in ("operator", "tests", "tests/integration", "tests/e2e"):
    sys.path.insert(0, str(REPO / extra))

NOOP = "def handler(event, context):\n    return {'n': len(event['Records'])}\n"


def fill(client: Any, stream: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"data": json.dumps({"n": i}), "partitionKey": f"k{i % 16}"})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def group(client: Any, stream: str, name: str) -> dict[str, Any]:
    for g in client.xinfo_groups(stream):
        if g["name"].decode() == name:
            return g
    return {}


def drained_rate(client: Any, stream: str, name: str, n: int, timeout: float = 600) -> tuple[float, float]:
    """(first ack seen, all acked) times of group *name*, sampled every 20 ms."""
    start = end = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        g = group(client, stream, name) if client.exists(stream) else {}
        read = g.get("entries-read") or 0
        if start is None and read:
            start = time.time()
        if read >= n and not g.get("pending"):
            end = time.time()
            break
        time.sleep(0.02)
    assert start is not None and end is not None, f"group {name} never drained {n} records"
    return start, end


def baseline(client: Any, stream: str, n: int, batch: int) -> float:
    client.xgroup_create(stream, "baseline", id="0")
    done, t0 = 0, time.time()
    while done < n:
        reply = client.xreadgroup("baseline", "c", {stream: ">"}, count=batch, block=1000)
        ids = [i for _, entries in reply for i, _ in entries]
        if ids:
            client.xack(stream, "baseline", *ids)
            done += len(ids)
    return n / (time.time() - t0)


def iterator_ages(w: Any, mapping: str, rate: float, seconds: float) -> list[float]:
    client = w.client()
    stop = threading.Event()

    def produce() -> None:
        i, t0 = 0, time.monotonic()
        while not stop.is_set():
            client.xadd("steady", {"data": json.dumps({"n": i})})
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))

    spec = w.mapping(mapping, "steady", batchSize=100, startingPosition="LATEST")
    spec["spec"]["functionName"] = "noop"
    w.api.apply([spec])
    (pod,) = rig_wait(lambda: [p for p in w.poller_pods(mapping) if p.get("status", {}).get("podIP")
                               and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])],
                      "the steady poller is ready")
    ip = pod["status"]["podIP"]
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    ages: list[float] = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        try:
            with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as r:
                page = r.read().decode()
        except OSError:
            page = ""  # not serving yet (or a slow scrape): the next sample counts
        ages += [float(line.split()[-1]) for line in page.splitlines()
                 if line.startswith("kfn_esm_iterator_age_milliseconds{")]
        time.sleep(0.5)
    stop.set()
    thread.join()
    return ages


def poller_rss_mb(w: Any, mapping: str) -> float:
    """Resident memory of a poller pod's process (PID 1: ``kfn poller``), MB — the cost of one mapping's pod."""
    (pod,) = w.poller_pods(mapping)
    status = w.cluster.kubectl("-n", w.ns, "exec", pod["metadata"]["name"], "--", "cat", "/proc/1/status").stdout
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def rig_wait(check: Any, what: str, timeout: float = 300) -> Any:
    from esmrig import wait_until

    return wait_until(check, timeout, what, interval=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--memory", type=int, default=1024,
                   help="the no-op function's memoryMB (CPU follows memory as on Lambda: 128 MB is 7 %% of a core)")
    args = p.parse_args()
    from testbed import Cluster, pinned_kubectl, testbed_settings

    settings = testbed_settings()
    kubectl = pinned_kubectl(settings)
    assert kubectl, "no kubectl: run `make cluster-up` first"
    cluster = Cluster(kubeconfig=settings["KUBECONFIG_PATH"], context=None, full_node=True, kubectl_path=kubectl,
                      is_testbed=True, settings=settings)
    subprocess.run(["bash", str(REPO / "testbed/images.sh")], check=True)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))  # as the tests do
    from esmrig import open_world

    workdir = Path("/tmp/kfn-bench-esm")
    workdir.mkdir(parents=True, exist_ok=True)
    with open_world(cluster, workdir, prefix="kfn-bench-esm") as w:
        w.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "noop"},
                      "spec": {"runtime": "python3.11", "handler": "app.handler", "memoryMB": args.memory,
                               "code": {"inline": {"files": {"app.py": NOOP}}}}}])
        client = w.client()
        fill(client, "bench", args.records)
        base = baseline(client, "bench", args.records, args.batch)
        spec = w.mapping("bench", "bench", batchSize=args.batch)
        spec["spec"]["functionName"] = "noop"
        w.api.apply([spec])
        start, end = drained_rate(client, "bench", "kfn", args.records)
        kfn = args.records / (end - start)
        ages = iterator_ages(w, "steady", args.rate, args.seconds)
        rss = poller_rss_mb(w, "steady")
    result = {
        "records": args.records, "batch_size": args.batch, "function_memory_mb": args.memory,
        "kfn_records_per_s": round(kfn, 1), "redis_py_records_per_s": round(base, 1),
        "ratio_kfn_to_baseline": round(kfn / base, 3),
        "steady_rate_per_s": args.rate,
        "iterator_age_ms": {"p50": round(statistics.median(ages), 1) if ages else None,
                            "max": round(max(ages), 1) if ages else None, "samples": len(ages)},
        "poller_rss_mb": rss,
    }
    out = REPO / "bench" / "results" / "esm.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
