"""Benchmark: asynchronous invocation through kfn against a plain NATS JetStream publish/consume loop, same run.

On the full test bed: a NATS JetStream pod (the image `make images` builds), the real ``kfn operator``,
``kfn gateway`` and ``kfn async-worker`` (host processes, scoped to a fresh namespace), and one Function that records
each run (request id, token, start time) in a JetStream stream with a PubAck (tests/e2e/test_async.py's rig).

* kfn: N events ``InvocationType: Event`` (C concurrent keep-alive HTTP clients) → accepted events/s (202s per
  second), end-to-end events/s (first send to last function start), and the latency from each 202 to the start of
  its function (p50/p99; the function's clock and the host's are the same machine's);
* baseline: the same N payloads published with nats-py to a JetStream stream on the same server (C concurrent
  publishers, each waiting for its PubAck) while a pull consumer acks them → published/s, end-to-end/s, and
  PubAck → consumed latency.

Writes bench/results/async.json (ratios kfn/baseline).

    python bench/async.py [--events 2000] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration"))


def load_rig() -> Any:
    spec = importlib.util.spec_from_file_location("kfn_async_rig", REPO / "tests" / "e2e" / "test_async.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def percentiles(values: list[float]) -> dict[str, float | None]:
    v = sorted(values)
    if not v:
        return {"p50_ms": None, "p99_ms": None}
    return {"p50_ms": round(1000 * v[len(v) // 2], 2), "p99_ms": round(1000 * v[min(len(v) - 1, int(len(v) * 0.99))], 2)}


async def send_kfn(url: str, function: str, n: int, clients: int) -> tuple[dict[str, float], float, float]:
    """{token: time its 202 arrived}, first send time, last 202 time (epoch seconds)."""
    import aiohttp

    acked: dict[str, float] = {}
    tokens = iter(range(n))
    path = f"{url}/2015-03-31/functions/{function}/invocations"

    async def client(session: aiohttp.ClientSession) -> None:
        for i in tokens:
            token = f"b-{i}"
            async with session.post(path, data=json.dumps({"token": token}).encode(),
                                    headers={"X-Amz-Invocation-Type": "Event"}) as r:
                await r.read()
                if r.status == 202:
                    acked[token] = time.time()

    t0 = time.time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        await asyncio.gather(*(client(s) for _ in range(clients)))
    return acked, t0, time.time()


async def nats_baseline(url: str, n: int, clients: int) -> dict[str, Any]:
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    name = f"BENCH_{secrets.token_hex(3)}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"bench.{name}"], storage=StorageType.FILE))
    acked: dict[str, float] = {}
    consumed: dict[str, float] = {}
    tokens = iter(range(n))

    async def publisher() -> None:
        for i in tokens:
            token = f"b-{i}"
            await js.publish(f"bench.{name}", json.dumps({"token": token}).encode())
            acked[token] = time.time()

    async def consumer() -> None:
        sub = await js.pull_subscribe(f"bench.{name}", durable="c", stream=name)
        while len(consumed) < n:
            try:
                msgs = await sub.fetch(64, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                consumed[json.loads(m.data)["token"]] = time.time()
                await m.ack()

    t0 = time.time()
    cons = asyncio.create_task(consumer())
    await asyncio.gather(*(publisher() for _ in range(clients)))
    t_pub = time.time()
    await asyncio.wait_for(cons, 300)
    t_end = max(consumed.values())
    await js.delete_stream(name)
    await nc.close()
    return {
        "accepted_per_s": round(n / (t_pub - t0), 1),
        "end_to_end_per_s": round(n / (t_end - t0), 1),
        "ack_to_consume": percentiles([consumed[t] - acked[t] for t in acked]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args()
    from testbed import Cluster, pinned_kubectl, testbed_settings

    settings = testbed_settings()
    kubectl = pinned_kubectl(settings)
    assert kubectl, "no kubectl: run `make cluster-up` first"
    cluster = Cluster(kubeconfig=settings["KUBECONFIG_PATH"], context=None, full_node=True, kubectl_path=kubectl,
                      is_testbed=True, settings=settings)
    subprocess.run(["bash", str(REPO / "testbed/images.sh")], check=True)
    rig = load_rig()
    ns = f"kfn-bench-async-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", ns)
    workdir = Path(f"/tmp/{ns}")
    workdir.mkdir(parents=True, exist_ok=True)
    nats_ = rig.Nats(cluster, ns)
    op = rig.Operator(cluster, ns, workdir).start()
    world = rig.World(cluster, ns, workdir, nats_)
    try:
        print("==> NATS JetStream pod, operator, gateway, async worker, the recording function", flush=True)
        nats_.start()
        rig.make_runs_stream(nats_.url, ns)
        world.api.apply([rig.fn("bench", world.env("bench"), reservedConcurrency=8)])
        gw = world.gateway()
        world.worker()
        # warm: one environment up and the consumer made
        warm = rig.lambda_client(gw.url)
        out = warm.invoke(FunctionName="bench", InvocationType="Event", Payload=b'{"token": "warm"}')
        rig.runs_of(world, "bench", out["ResponseMetadata"]["RequestId"], 1, 300)
        warm.close()
        print(f"==> kfn: {args.events} events, {args.clients} clients", flush=True)
        acked, t0, t_sent = asyncio.run(send_kfn(gw.url, "bench", args.events, args.clients))

        def all_ran() -> bool:
            return {r["token"] for r in rig.read_runs(nats_.url, ns, "bench")} >= set(acked)
        rig.wait_until(all_ran, 900, "every event ran", interval=2)
        runs: dict[str, float] = {}
        for r in rig.read_runs(nats_.url, ns, "bench"):
            runs.setdefault(r["token"], r["t"])  # the first run of each (duplicates are possible)
        starts = [runs[t] for t in acked]
        kfn = {
            "accepted_per_s": round(len(acked) / (t_sent - t0), 1),
            "end_to_end_per_s": round(len(acked) / (max(starts) - t0), 1),
            "accepted_to_start": percentiles([runs[t] - acked[t] for t in acked]),
            "accepted": len(acked),
            # how the worker's attempts went: throttles (each one a wait or a requeue with backoff) vs runs
            "worker_attempts": {result: rig.scrape(world.workers[0].url, "kfn_async_attempts_total", result=result)
                                for result in ("ok", "function-error", "throttled", "system-error")},
        }
        print(f"==> baseline: nats-py JetStream publish/consume of the same {args.events} payloads", flush=True)
        base = asyncio.run(nats_baseline(nats_.url, args.events, args.clients))
    finally:
        for proc in [*world.gateways, *world.workers]:
            proc.stop()
        op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        nats_.stop()
    result = {
        "kfn": kfn, "nats": base,
        "ratio": {
            "accepted_per_s_kfn_over_nats": round(kfn["accepted_per_s"] / base["accepted_per_s"], 3),
            "end_to_end_per_s_kfn_over_nats": round(kfn["end_to_end_per_s"] / base["end_to_end_per_s"], 3),
            # the consumer may see a message before its publisher sees the PubAck: no ratio of a p50 at or below 0
            "p50_latency_kfn_over_nats": (round(kfn["accepted_to_start"]["p50_ms"] / base["ack_to_consume"]["p50_ms"], 2)
                                          if (base["ack_to_consume"]["p50_ms"] or 0) > 0 else None),
        },
        "detail": {"events": args.events, "clients": args.clients, "reserved_concurrency": 8,
                   "nats_sync": "always (fsync before PubAck)",
                   "worker_throttle_wait_s": float(os.environ.get("KFN_ASYNC_THROTTLE_WAIT", "5"))},
    }
    out_path = REPO / "bench" / "results" / "async.json"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
