"""Benchmark: Redis Streams and Kafka event source mappings through kfn against each broker's own consumer, same run.

On the full test bed (tests/e2e/esmrig.py's world: a Redis pod, the real operator and gateway on the host, a poller
pod per mapping, one function pod; a one-node Kafka (KRaft) pod for the Kafka half):

* kfn: N records written to the source (XADD / aiokafka's producer), then a mapping (batchSize B, TRIM_HORIZON)
  to a no-op function (--memory MB) → records/s from the first record acknowledged to the last (Redis: the
  consumer group's ``entries-read``, ``lag`` and pending count; Kafka: the group's committed offsets);
* baseline: the same N records read on the host by the broker's own consumer — redis-py XREADGROUP (COUNT B) +
  XACK; an aiokafka consumer group (getmany, max_records B) + commit — one consumer → records/s;
* iterator age under a steady load: R records/s written for S seconds (below capacity) while a mapping runs; the
  poller's ``kfn_esm_iterator_age_milliseconds`` sampled from its /metrics every 0.2 s (p50, p99, max), and the
  poller process's resident memory (the price of one Deployment per mapping).

Writes bench/results/esm.json (ratio kfn/baseline per source).

    python bench/esm.py [--records 20000] [--batch 100] [--rate 200] [--seconds 30] [--sources redis,kafka]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in ("operator", "tests", "tests/integration", "tests/e2e"):
    sys.path.insert(0, str(REPO / extra))

NOOP = "def handler(event, context):\n    return {'n': len(event.get('Records') or event.get('records') or [])}\n"
KAFKA_IMAGE = "docker.io/kfn/kafka:dev"


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


def percentile(values: list[float], q: float) -> float | None:
    """The *q*-quantile (0..1) of *values*, nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)


def ready_poller_ip(w: Any, mapping: str) -> str:
    (pod,) = rig_wait(lambda: [p for p in w.poller_pods(mapping) if p.get("status", {}).get("podIP")
                               and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])],
                      f"the {mapping} poller is ready")
    return str(pod["status"]["podIP"])


def iterator_ages(w: Any, spec: dict[str, Any], produce_one: Callable[[int], None], rate: float,
                  seconds: float) -> dict[str, Any]:
    """Apply mapping *spec* (LATEST), produce *rate* records/s for *seconds* with *produce_one(i)* in a thread, and
    sample the poller's IteratorAge gauge; p50/p99/max in ms, how many samples, records produced."""
    mapping = spec["metadata"]["name"]
    w.api.apply([spec])
    ip = ready_poller_ip(w, mapping)
    time.sleep(5)  # the poller joins its group / creates it at LATEST before the first record is produced
    stop = threading.Event()
    produced = [0]

    def produce() -> None:
        i, t0 = 0, time.monotonic()
        while not stop.is_set():
            produce_one(i)
            i += 1
            produced[0] = i
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))

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
        time.sleep(0.2)
    stop.set()
    thread.join()
    return {"iterator_age_p50_ms": percentile(ages, 0.5), "iterator_age_p99_ms": percentile(ages, 0.99),
            "iterator_age_max_ms": round(max(ages), 1) if ages else None, "iterator_age_samples": len(ages),
            "steady_records_produced": produced[0], "steady_achieved_rate_per_s": round(produced[0] / seconds, 1)}


def poller_rss_mb(w: Any, mapping: str) -> float:
    """Resident memory of a poller pod's process (PID 1: ``kfn poller``), MB — the cost of one mapping's pod."""
    (pod,) = w.poller_pods(mapping)
    status = w.cluster.kubectl("-n", w.ns, "exec", pod["metadata"]["name"], "--", "cat", "/proc/1/status").stdout
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def rig_wait(check: Any, what: str, timeout: float = 300) -> Any:
    from esmrig import wait_until

    return wait_until(check, timeout, what, interval=1)


# --- Redis Streams --------------------------------------------------------------------------------------------


def bench_redis(w: Any, args: argparse.Namespace) -> dict[str, Any]:
    client = w.client()
    fill(client, "bench", args.records)
    base = baseline(client, "bench", args.records, args.batch)
    spec = w.mapping("bench", "bench", batchSize=args.batch)
    spec["spec"]["functionName"] = "noop"
    w.api.apply([spec])
    start, end = drained_rate(client, "bench", "kfn", args.records)
    kfn = args.records / (end - start)
    w.api.kubectl("delete", "esm", "bench", "--wait=false")  # its poller stops competing for the node's 2 cores

    def produce_one(i: int) -> None:
        client.xadd("steady", {"data": json.dumps({"n": i})})

    steady = w.mapping("steady", "steady", batchSize=args.batch, startingPosition="LATEST")
    steady["spec"]["functionName"] = "noop"
    ages = iterator_ages(w, steady, produce_one, args.rate, args.seconds)
    rss = poller_rss_mb(w, "steady")
    w.api.kubectl("delete", "esm", "steady", "--wait=false")
    return {"kfn_records_per_s": round(kfn, 1), "redis_py_records_per_s": round(base, 1),
            "ratio_kfn_to_baseline": round(kfn / base, 3), **ages, "poller_rss_mb": rss}


# --- Kafka ----------------------------------------------------------------------------------------------------


async def kafka_fill(servers: str, topic: str, n: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, json.dumps({"n": i}).encode(), key=f"k{i % 16}".encode())
                   for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def kafka_baseline(servers: str, topic: str, n: int, batch: int, group: str = "baseline") -> float:
    """aiokafka's own consumer group: getmany (max_records=batch) + commit, until *n* records; records/s."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        done, t0 = 0, None
        while done < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=batch)
            count = sum(len(v) for v in got.values())
            if count:
                t0 = t0 or time.time()  # from the first batch: joining the group is not reading
                await consumer.commit()
                done += count
        return n / (time.time() - t0) if t0 else 0.0
    finally:
        await consumer.stop()


async def kafka_drained(servers: str, group: str, n: int, timeout: float = 600) -> tuple[float, float]:
    """(first commit seen, all *n* committed) times of *group*, its committed offsets (summed over partitions)
    sampled every 50 ms through one admin client."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
    await admin.start()
    start = end = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                done = sum(max(0, meta.offset) for meta in offsets.values())
            except Exception as e:  # noqa: BLE001 - the group not there yet, the coordinator moving: sample again
                print(f"  (committed offsets not readable yet: {e!r})", file=sys.stderr)
                done = 0
            if start is None and done:
                start = time.time()
            if done >= n:
                end = time.time()
                break
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    assert start is not None and end is not None, f"group {group} never committed {n} records"
    return start, end


class ThreadProducer:
    """aiokafka's producer on an event loop of its own thread, for the steady-load thread's plain calls."""

    def __init__(self, servers: str) -> None:
        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> Any:
            producer = AIOKafkaProducer(bootstrap_servers=servers)
            await producer.start()
            return producer

        self.producer = asyncio.run_coroutine_threadsafe(start(), self.loop).result(60)

    def send(self, topic: str, value: bytes) -> None:
        """Hand one record to the producer (its batch is sent in the background; acks are not waited for)."""
        asyncio.run_coroutine_threadsafe(self.producer.send(topic, value), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.producer.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def bench_kafka(w: Any, args: argparse.Namespace) -> dict[str, Any]:
    from brokerpods import create_kafka_topic, running_broker

    env = [{"name": "KAFKA_ADVERTISED_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    with running_broker(w.cluster, "kafka", KAFKA_IMAGE, 9092, env=env, timeout=420) as ip:
        servers = f"{ip}:9092"
        asyncio.run(create_kafka_topic(servers, "bench", 1))
        asyncio.run(kafka_fill(servers, "bench", args.records))
        # a first, untimed read warms the broker (a JVM just started) for the baseline and kfn alike
        asyncio.run(kafka_baseline(servers, "bench", args.records, args.batch, group="warmup"))
        base = asyncio.run(kafka_baseline(servers, "bench", args.records, args.batch))
        spec = {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": "kbench"},
                "spec": {"functionName": "noop", "batchSize": args.batch, "startingPosition": "TRIM_HORIZON",
                         "source": {"kafka": {"bootstrapServers": [servers], "topic": "bench",
                                              "consumerGroupId": "kfn-bench"}}}}
        w.api.apply([spec])
        start, end = asyncio.run(kafka_drained(servers, "kfn-bench", args.records))
        kfn = args.records / (end - start)
        w.api.kubectl("delete", "esm", "kbench", "--wait=false")

        asyncio.run(create_kafka_topic(servers, "steady", 1))
        producer = ThreadProducer(servers)
        steady = {"apiVersion": "kfn.dev/v1alpha1", "kind": "EventSourceMapping", "metadata": {"name": "ksteady"},
                  "spec": {"functionName": "noop", "batchSize": args.batch, "startingPosition": "LATEST",
                           "source": {"kafka": {"bootstrapServers": [servers], "topic": "steady"}}}}
        try:
            ages = iterator_ages(w, steady, lambda i: producer.send("steady", json.dumps({"n": i}).encode()),
                                 args.rate, args.seconds)
        finally:
            producer.close()
        rss = poller_rss_mb(w, "ksteady")
        w.api.kubectl("delete", "esm", "ksteady", "--wait=false")
    return {"kfn_records_per_s": round(kfn, 1), "aiokafka_records_per_s": round(base, 1),
            "ratio_kfn_to_baseline": round(kfn / base, 3) if base else None, **ages, "poller_rss_mb": rss}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rate", type=float, default=200.0, help="steady load, records/s (below capacity)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the steady load lasts")
    p.add_argument("--sources", default="redis,kafka", help="comma-separated: redis, kafka")
    p.add_argument("--memory", type=int, default=1024,
                   help="the no-op function's memoryMB (CPU follows memory as on Lambda: 128 MB is 7 %% of a core)")
    args = p.parse_args()
    sources = [x.strip() for x in args.sources.split(",") if x.strip()]
    unknown = set(sources) - {"redis", "kafka"}
    if unknown:
        p.error(f"unknown sources: {sorted(unknown)}")
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
    result: dict[str, Any] = {"records": args.records, "batch_size": args.batch, "function_memory_mb": args.memory,
                              "steady_rate_per_s": args.rate, "steady_seconds": args.seconds}
    with open_world(cluster, workdir, prefix="kfn-bench-esm") as w:
        w.api.apply([{"apiVersion": "kfn.dev/v1alpha1", "kind": "Function", "metadata": {"name": "noop"},
                      "spec": {"runtime": "python3.11", "handler": "app.handler", "memoryMB": args.memory,
                               "code": {"inline": {"files": {"app.py": NOOP}}}}}])
        for source in sources:
            print(f"==> {source}", file=sys.stderr)
            result[source] = (bench_redis if source == "redis" else bench_kafka)(w, args)
    out = REPO / "bench" / "results" / "esm.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(table(result))
    return 0


def table(result: dict[str, Any]) -> str:
    rows = [f"{'source':8} {'kfn rec/s':>10} {'baseline rec/s':>15} {'ratio':>6} {'age p50 ms':>11} "
            f"{'age p99 ms':>11} {'poller RSS MB':>14}"]
    for source in ("redis", "kafka"):
        r = result.get(source)
        if not r:
            continue
        base = r.get("redis_py_records_per_s", r.get("aiokafka_records_per_s"))
        rows.append(f"{source:8} {r['kfn_records_per_s']:>10} {base:>15} {r['ratio_kfn_to_baseline']!s:>6} "
                    f"{r['iterator_age_p50_ms']!s:>11} {r['iterator_age_p99_ms']!s:>11} {r['poller_rss_mb']:>14}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
