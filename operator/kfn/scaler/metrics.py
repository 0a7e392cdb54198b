"""The scaler's Prometheus metrics, declared once (prefix ``kfn_scaler_``); labels are bounded (versions that
have a Deployment, directions, fixed names)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DESIRED = Gauge("kfn_scaler_desired_environments", "Execution environments the scaler wants for a version.",
                ["namespace", "function", "version"])
READY = Gauge("kfn_scaler_ready_environments", "Ready execution environments of a version (its EndpointSlices).",
              ["namespace", "function", "version"])
DEMAND = Gauge("kfn_scaler_demand", "Invocations in flight, waiting or queued for a version, every reporter.",
               ["namespace", "function", "version"])
TOKENS = Gauge("kfn_scaler_burst_tokens", "New environments the function's burst bucket allows now.",
               ["namespace", "function"])
POOL_USED = Gauge("kfn_scaler_pool_used_environments", "Environments of functions without a reservation.")
PROVISIONED_UTILIZATION = Gauge(
    "kfn_scaler_provisioned_concurrency_utilization",
    "Lambda's ProvisionedConcurrencyUtilization: invocations in flight over provisioned environments (0..1+).",
    ["namespace", "function", "version"])
PC_AUTOSCALING_DESIRED = Gauge(
    "kfn_scaler_pc_autoscaling_desired",
    "Provisioned environments an auto-scaled Alias or FunctionVersion's target tracking wants now.",
    ["kind", "namespace", "name"])
PC_AUTOSCALING_UTILIZATION = Gauge(
    "kfn_scaler_pc_autoscaling_utilization",
    "ProvisionedConcurrencyUtilization of an auto-scaled Alias or FunctionVersion, sampled each tick (0..1).",
    ["kind", "namespace", "name"])
DECISIONS = Counter("kfn_scaler_decisions_total", "Changes of a version's desired environments, by direction.",
                    ["direction"])
DECISION_SECONDS = Histogram("kfn_scaler_decision_seconds", "Time from a demand push's arrival to its decisions.",
                             buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
WRITE_SECONDS = Histogram("kfn_scaler_write_seconds", "Time to set replicas through the scale subresource.",
                          buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
WRITE_ERRORS = Counter("kfn_scaler_write_errors_total", "Scale writes the API server refused or failed.")
REPORTS = Counter("kfn_scaler_reports_total", "Demand pushes received, by outcome (ok, bad).", ["outcome"])
