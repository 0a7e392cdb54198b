"""The operator's Prometheus metrics, declared once (prefix ``kfn_operator_``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RESULTS = ("ready", "not_ready", "retry", "invalid", "error", "skipped")

RECONCILES = Counter(
    "kfn_operator_reconcile_total",
    "Reconcile passes, by kind and result (ready, not_ready, retry, invalid, error, skipped).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "kfn_operator_reconcile_duration_seconds",
    "Wall time of one reconcile pass, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "kfn_operator_reconcile_errors_total",
    "Reconcile passes that raised an unexpected error, by kind and exception type.",
    ["kind", "error"],
)
CHILD_REPAIRS = Counter(
    "kfn_operator_child_repairs_total",
    "Reconciles triggered because a child object was deleted, by child kind.",
    ["child_kind"],
)
VERSIONS_PUBLISHED = Counter(
    "kfn_operator_versions_published_total",
    "FunctionVersions created by declarative publishing.",
)
RESYNC_PASSES = Counter(
    "kfn_operator_resync_passes_total",
    "Completed passes of the periodic resync over every object (by the active replica).",
)
TASK_RESTARTS = Counter(
    "kfn_operator_task_restarts_total",
    "Restarts of a supervised background task after a transient error (API server unreachable, 5xx, 429), by task.",
    ["task"],
)
TASK_DEATHS = Counter(
    "kfn_operator_task_deaths_total",
    "Supervised background tasks that ended for good (health turns red), by task.",
    ["task"],
)
API_REQUESTS = Counter(
    "kfn_kube_api_requests_total",
    "Requests kfn made to the Kubernetes API through kfn.k8s (Kopf's own watches excluded), "
    "by API group, resource, RBAC verb and HTTP status (0: no answer).",
    ["group", "resource", "verb", "code"],
)
UP = Gauge("kfn_operator_up", "1 while the operator process runs.")


@contextmanager
def timed(kind: str) -> Iterator[None]:
    """Time a reconcile pass; count it as an error if it raises."""
    start = time.perf_counter()
    try:
        yield
    except Exception as e:
        RECONCILE_ERRORS.labels(kind, type(e).__name__).inc()
        RECONCILES.labels(kind, "error").inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - start)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on a background thread."""
    start_http_server(port, addr=addr)
    UP.set(1)
