"""The Helm chart (charts/kfn) rendered offline by the pinned helm: what a user installs.

Each test renders the chart with ``helm template`` (helm built from the Go
module proxy into the test-bed cache, testbed/build-tools.sh) and checks what
a user of ``helm install`` would get: the same operator and RBAC as ``kfn
install`` (one Python source), Pod Security ``restricted``, CRDs that upgrade
and survive ``helm uninstall``, values that fail naming the value, and the
committed plain manifests and Argo CD snippet equal to a fresh render.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from tools import CHART, KUBE_VERSION, REPO, build_tool, helm

from kfn import crdgen, install
from kfn.install import GATEWAY_RULES
from kfn.resources.rbac import make_role, operator_rules

Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def helm_bin(pytestconfig: pytest.Config) -> str:
    return build_tool("helm", pytestconfig)


def template_args(*sets: str, namespace: str = "kfn-system", release: str = "kfn") -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for s in sets:  # "string:KEY=VALUE" keeps VALUE a string (helm --set-string)
        args += ["--set-string", s.removeprefix("string:")] if s.startswith("string:") else ["--set", s]
    return args


@pytest.fixture(scope="module")
def render(helm_bin: str) -> Render:
    def _render(*sets: str, api_versions: tuple[str, ...] = (), release: str = "kfn") -> list[dict[str, Any]]:
        args = template_args(*sets, release=release) + [a for v in api_versions for a in ("--api-versions", v)]
        return [d for d in yaml.safe_load_all(helm(helm_bin, *args).stdout) if d]

    return _render


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"want one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def test_helm_lint_is_clean(helm_bin: str) -> None:
    out = helm(helm_bin, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def by_component(objs: list[dict[str, Any]], component: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        if (o["metadata"].get("labels") or {}).get("kfn.dev/component") == component:
            out.setdefault(o["kind"], []).append(o)
    return out


def rules_of(objects: list[dict[str, Any]], component: str, kind: str) -> list[list[dict[str, Any]]]:
    return [r["rules"] for r in by_component(objects, component).get(kind, [])]


def without_peering(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rules if r["apiGroups"] != ["kopf.dev"]]


def test_cluster_wide_rbac_is_kfn_installs(render: Render) -> None:
    objs = render()
    ours = install.make_install_manifests("kfn-system")
    # the chart's operator is one standalone replica: kfn install's rules without Kopf peering
    assert rules_of(objs, "operator", "ClusterRole") == [operator_rules(clusterwide=True, peering=False)]
    assert rules_of(objs, "operator", "ClusterRole") == [without_peering(r) for r in rules_of(ours, "operator", "ClusterRole")]
    assert rules_of(objs, "gateway", "ClusterRole") == rules_of(ours, "gateway", "ClusterRole") == [GATEWAY_RULES]
    for component in ("operator", "gateway"):
        k = by_component(objs, component)
        (role,), (binding,), (sa,), (deploy,) = k["ClusterRole"], k["ClusterRoleBinding"], k["ServiceAccount"], k["Deployment"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "kfn-system"}]
        assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
        assert not k.get("Role") and not k.get("RoleBinding")


def test_watching_namespaces_grants_roles_there_and_nothing_cluster_wide(render: Render) -> None:
    objs = render("operator.watchNamespaces={team-a,team-b}")
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    ours = install.make_install_manifests("kfn-system", watch_namespaces=("team-a", "team-b"))
    assert rules_of(objs, "operator", "Role") == rules_of(ours, "operator", "Role") == [make_role("x", "team-a")["rules"]] * 2
    assert rules_of(objs, "gateway", "Role") == [GATEWAY_RULES] * 2
    for component in ("operator", "gateway"):
        k = by_component(objs, component)
        (sa,) = k["ServiceAccount"]
        assert sorted(r["metadata"]["namespace"] for r in k["Role"]) == ["team-a", "team-b"]
        for b in k["RoleBinding"]:
            assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa["metadata"]["name"]}
            assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "kfn-system"}]


@pytest.mark.parametrize("image", ["kfn/kfn:dev", "registry.example:5000/team/kfn/kfn:1.2.3", "example.org/other:7"])
@pytest.mark.parametrize("watch", [(), ("team-a",)])
def test_operator_runs_what_kfn_install_runs(render: Render, image: str, watch: tuple[str, ...]) -> None:
    repo, tag = image.rsplit(":", 1)
    sets = [f"image.repository={repo}", f"string:image.tag={tag}"]
    if watch:
        sets.append("operator.watchNamespaces={" + ",".join(watch) + "}")
    objs = render(*sets)
    (deploy,) = by_component(objs, "operator")["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    ours = install.make_operator_deployment("kfn-system", image, watch_namespaces=watch)["spec"]["template"]["spec"]
    (chart_c,), (install_c,) = pod["containers"], ours["containers"]
    # The chart runs one standalone replica (a Recreate Deployment); kfn install
    # uses Kopf peering cluster-wide. Apart from that and the resync period, the
    # command is the same: same images for agents and runtimes, same ports.
    def comparable(cmd: list[str]) -> list[str]:
        out, skip = [], False
        for a in cmd:
            if skip:
                skip = False
                continue
            if a in ("--peering", "--resync-seconds"):
                skip = True
                continue
            if a != "--standalone":
                out.append(a)
        return out

    assert comparable(chart_c["command"]) == comparable(install_c["command"])
    assert chart_c["image"] == image
    for key in ("ports", "livenessProbe", "readinessProbe", "volumeMounts"):
        assert chart_c[key] == install_c[key], key
    assert pod["volumes"] == ours["volumes"]
    # the gateway: the same pod as kfn install's, replicas from the values
    (gw,) = by_component(objs, "gateway")["Deployment"]
    gw_ours = install.make_gateway_deployment("kfn-system", image, watch_namespaces=watch,
                                              nats_url="nats://kfn-nats.kfn-system.svc:4222")  # async on by default
    (c,), (c_ours,) = gw["spec"]["template"]["spec"]["containers"], gw_ours["spec"]["template"]["spec"]["containers"]
    for key in ("command", "image", "ports", "livenessProbe", "readinessProbe", "volumeMounts"):
        assert c[key] == c_ours[key], key
    for key in ("volumes", "terminationGracePeriodSeconds"):
        assert gw["spec"]["template"]["spec"][key] == gw_ours["spec"]["template"]["spec"][key], key
    assert gw["spec"]["strategy"] == gw_ours["spec"]["strategy"]
    # a terminating gateway serves on until kube-proxy has dropped it, then drains within the grace period
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = float(c["command"][c["command"].index("--grace-seconds") + 1])
    assert 0 < sleep and sleep + grace < gw["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert gw["spec"]["replicas"] == gw_ours["spec"]["replicas"] == 2


def test_gateway_scales_by_replicas_or_cpu_and_keeps_one_through_drains(render: Render) -> None:
    k = by_component(render("gateway.replicas=3"), "gateway")
    assert k["Deployment"][0]["spec"]["replicas"] == 3 and "HorizontalPodAutoscaler" not in k
    (pdb,) = k["PodDisruptionBudget"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= k["Deployment"][0]["spec"]["template"]["metadata"]["labels"].items()
    k = by_component(render("gateway.autoscaling.enabled=true", "gateway.autoscaling.maxReplicas=7"), "gateway")
    (hpa,) = k["HorizontalPodAutoscaler"]
    assert "replicas" not in k["Deployment"][0]["spec"]  # the HPA owns it; an upgrade must not reset it
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # the functions' ingress NetworkPolicy admits exactly these pods
    assert k["Deployment"][0]["spec"]["template"]["metadata"]["labels"]["kfn.dev/component"] == "gateway"
    assert not [o for o in render("gateway.enabled=false") if (o["metadata"].get("labels") or {}).get("kfn.dev/component") == "gateway"]


def test_keda_mode_points_the_operators_scaled_objects_at_the_scalers_grpc_service(render: Render) -> None:
    # Catches: KEDA mode that the chart cannot turn on, or ScaledObjects whose scalerAddress reaches nothing.
    objs = render("keda.enabled=true", "keda.defaultMode=keda", "keda.grpcPort=9191")
    scaler = by_component(objs, "scaler")
    (c,) = scaler["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    assert c["command"][c["command"].index("--keda-port") + 1] == "9191"
    assert {"name": "grpc", "containerPort": 9191, "protocol": "TCP"} in c["ports"]
    (svc,) = scaler["Service"]
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["targetPort"] == "grpc"
    env = {e["name"]: e.get("value") for e in by_component(objs, "operator")["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KFN_SCALING"] == "keda"
    assert env["KFN_KEDA_SCALER_ADDRESS"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{grpc['port']}"
    # off by default: no gRPC port, the built-in mode
    plain = render()
    (c,) = by_component(plain, "scaler")["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    assert "--keda-port" not in c["command"]
    env = {e["name"] for e in by_component(plain, "operator")["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not env & {"KFN_SCALING", "KFN_KEDA_SCALER_ADDRESS"}


def pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objs
            if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def test_every_pod_meets_pod_security_restricted(render: Render) -> None:
    pods = pod_specs(render("operator.watchNamespaces={a}"))
    assert pods, "the chart renders no pod"
    for name, pod in pods:
        psc = pod.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, name
        assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        assert all("hostPath" not in v for v in pod.get("volumes") or []), name
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", (name, c["name"])


def test_crds_are_templates_kept_on_uninstall_and_generated_from_the_models(render: Render) -> None:
    crds = {o["metadata"]["name"]: o for o in render() if o["kind"] == "CustomResourceDefinition"}
    generated = {c["metadata"]["name"]: c for c in crdgen.make_crds()}
    assert crds.keys() == generated.keys()
    for name, crd in crds.items():
        assert crd["spec"] == generated[name]["spec"], name
        ann = crd["metadata"]["annotations"]
        assert ann["helm.sh/resource-policy"] == "keep", name
        assert ann["argocd.argoproj.io/sync-wave"] == "-10", name
    # Helm never upgrades crds/: nothing may sit there
    assert not (CHART / "crds").exists()


def test_crds_can_be_left_to_the_user_and_unkept(render: Render) -> None:
    assert not [o for o in render("crds.install=false") if o["kind"] == "CustomResourceDefinition"]
    crds = [o for o in render("crds.keep=false") if o["kind"] == "CustomResourceDefinition"]
    assert crds and all("helm.sh/resource-policy" not in o["metadata"]["annotations"] for o in crds)


def test_sync_waves_put_crds_before_the_operator(render: Render) -> None:
    objs = render()
    waves = {(o["kind"], o["metadata"]["name"]): int(o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
             for o in objs if o["kind"] != "ServiceMonitor"}
    crd_waves = {w for (k, _), w in waves.items() if k == "CustomResourceDefinition"}
    rest = {w for (k, _), w in waves.items() if k != "CustomResourceDefinition"}
    assert max(crd_waves) < min(rest)
    # the example Application's Functions come after the operator
    app_docs = [d for d in yaml.safe_load_all((CHART / "argocd" / "application.yaml").read_text()) if d]
    fn_wave = [d for d in app_docs if d["kind"] == "Application" and "functions" in d["metadata"]["name"]]
    assert fn_wave and int(fn_wave[0]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) > max(rest)


def test_service_monitor_only_where_prometheus_operator_serves_it(render: Render) -> None:
    assert not [o for o in render() if o["kind"] == "ServiceMonitor"]
    objs = render(api_versions=("monitoring.coreos.com/v1/ServiceMonitor",))
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    for sm in monitors:
        (svc,) = [s for s in objs if s["kind"] == "Service"
                  and sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]]


def test_network_policies_open_only_what_kfns_pods_serve(render: Render) -> None:
    objs = render()
    for component, ports in (("operator", [9090]), ("gateway", [8080])):
        pod_labels = by_component(objs, component)["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
        (np,) = [o for o in objs if o["kind"] == "NetworkPolicy"
                 and o["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()]
        assert np["spec"]["policyTypes"] == ["Ingress"]
        assert [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]] == ports
    assert not [o for o in render("networkPolicy.enabled=false") if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.resyncSeconds=soon", "at '/operator/resyncSeconds': got string, want integer"),
        ("operator.resyncSeconds=1", "at '/operator/resyncSeconds': minimum: got 1, want 10"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
        ("operator.watchNamespaces={Team_A}", "at '/operator/watchNamespaces/0'"),
        ("operater.resyncSeconds=60", "additional properties 'operater' not allowed"),
        ("crds.keep=maybe", "at '/crds/keep': got string, want boolean"),
        ("keda.defaultMode=hpa", "at '/keda/defaultMode': value must be one of 'builtin', 'keda'"),
        ("operator.otlpEndpoint=otel:4318", "at '/operator/otlpEndpoint'"),
        ("gateway.otlpEndpoint=otel:4318", "at '/gateway/otlpEndpoint'"),
        ("operator.urlBase=lambda.example.com", "at '/operator/urlBase'"),
    ],
)
def test_invalid_values_fail_naming_the_value(helm_bin: str, setting: str, message: str) -> None:
    proc = helm(helm_bin, *template_args(setting), check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_committed_plain_manifests_equal_a_fresh_render(helm_bin: str) -> None:
    fresh = helm(helm_bin, *template_args("createNamespace=true")).stdout
    committed = (CHART / "manifests" / "kfn.yaml").read_text()
    assert committed == fresh, "charts/kfn/manifests/kfn.yaml is stale: run `make chart`"
    objs = [d for d in yaml.safe_load_all(fresh) if d]
    ns = one(objs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = [o["kind"] for o in objs]
    assert kinds.index("Namespace") < kinds.index("CustomResourceDefinition") < kinds.index("Deployment")
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "NetworkPolicy"} <= set(kinds)


def test_committed_argocd_snippet_equals_the_chart_option(helm_bin: str) -> None:
    fresh = helm(helm_bin, *template_args("argocd.healthChecks.enabled=true"), "--show-only",
                 "templates/argocd-health.yaml").stdout
    assert (CHART / "argocd" / "argocd-cm.yaml").read_text() == fresh, "run `make chart`"
    (cm,) = [d for d in yaml.safe_load_all(fresh) if d]
    script = (CHART / "argocd" / "health.lua").read_text()
    assert cm["data"] == {f"resource.customizations.health.kfn.dev_{k}": script
                          for k in ("Function", "FunctionVersion", "Alias", "EventSourceMapping")}
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("argocd-cm", "argocd")


def test_generated_chart_files_are_fresh() -> None:
    from kfn import chartgen

    for name, text in chartgen.render().items():
        assert (CHART / "files" / name).read_text() == text, f"charts/kfn/files/{name} is stale: run `make crds`"


def dashboard_exprs() -> list[str]:
    dash = json.loads((CHART / "files" / "dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_shows_what_lambda_users_watch(render: Render) -> None:
    cm = one(render(), "ConfigMap", "kfn-grafana-dashboard")
    assert json.loads(cm["data"]["kfn.json"]) == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    used = {m for e in dashboard_exprs() for m in re.findall(r"\bkfn_[a-z_]+", e)}
    for needed in ("invocations", "errors", "throttles", "duration", "cold_start", "concurrent"):
        assert any(needed in m for m in used), needed
    from prometheus_client import REGISTRY

    import kfn.metrics  # noqa: F401  (registers the operator's metrics)

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    served = {m.name + sfx for m in REGISTRY.collect() for sfx in suffixes.get(m.type, ())}
    operator_metrics = {m for m in used if m.startswith("kfn_operator_")}
    assert operator_metrics and operator_metrics <= served


def test_dashboard_gateway_metrics_exist_in_the_gateway() -> None:
    source = (REPO / "operator" / "kfn" / "gateway" / "metrics.py").read_text()
    used = {m.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum").removesuffix("_total")
            for e in dashboard_exprs() for m in re.findall(r"\bkfn_gateway_[a-z_]+", e)}
    missing = sorted(m for m in used if f'"{m}' not in source)
    assert not missing, f"the dashboard queries metrics the gateway does not declare: {missing}"


def test_kfn_install_ships_the_committed_plain_manifests() -> None:
    from importlib.resources import files

    shipped = files("kfn").joinpath(install.CHART_MANIFESTS).read_text()
    assert shipped == (CHART / "manifests" / "kfn.yaml").read_text(), "operator/kfn/manifests/kfn.yaml is stale: run `make chart`"


@pytest.mark.parametrize(
    ("cli", "sets"),
    [
        ([], []),
        (["--namespace", "ops", "--image", "registry.example:5000/team/kfn/kfn:1.2.3", "--gateway-replicas", "3"],
         ["image.repository=registry.example:5000/team/kfn/kfn", "string:image.tag=1.2.3", "gateway.replicas=3"]),
        (["--namespace", "lambda", "--image", "example.org/other:7", "--gateway-replicas", "0"],
         ["image.repository=example.org/other", "string:image.tag=7", "gateway.enabled=false"]),
    ],
)
def test_kfn_install_prints_what_the_chart_renders(helm_bin: str, cli: list[str], sets: list[str]) -> None:
    # kfn install (cluster-wide, one operator) and helm install put in the same objects, whatever namespace and image
    import subprocess
    import sys

    args = ["install", *cli] + ([] if "--image" in cli else ["--image", "kfn/kfn:dev"])  # not $KFN_IMAGE_TAG's default
    out = subprocess.run([sys.executable, "-m", "kfn.cli.main", *args], capture_output=True, text=True, timeout=60,
                         check=True)
    namespace = cli[cli.index("--namespace") + 1] if "--namespace" in cli else "kfn-system"
    printed = [d for d in yaml.safe_load_all(out.stdout) if d]
    rendered = helm(helm_bin, *template_args("createNamespace=true", *sets, namespace=namespace)).stdout
    assert printed == [d for d in yaml.safe_load_all(rendered) if d]
    assert out.stderr == ""  # nothing else to apply by hand (the chart's operator needs no peering object)
    from kfn import k8s

    # `kfn install --apply` reaches every kind it prints
    assert {d["kind"] for d in printed} <= k8s.KINDS.keys()


def test_gateway_writes_are_off_unless_allowed_and_then_bound_to_the_gateway(render: Render) -> None:
    from kfn.install import GATEWAY_WRITE_RULES

    def gateway_command(objs: list[dict[str, Any]]) -> list[str]:
        deploy = one(objs, "Deployment", "kfn-gateway")
        return deploy["spec"]["template"]["spec"]["containers"][0]["command"]

    off = render()
    assert "--allow-writes" not in gateway_command(off)
    assert not [o for o in off if o["metadata"]["name"] == "kfn-gateway-write"]
    on = render("gateway.allowWrites=true", "gateway.s3Endpoint=http://s3.example:9000")
    command = gateway_command(on)
    assert "--allow-writes" in command and command[command.index("--s3-endpoint") + 1] == "http://s3.example:9000"
    assert one(on, "ClusterRole", "kfn-gateway-write")["rules"] == GATEWAY_WRITE_RULES
    binding = one(on, "ClusterRoleBinding", "kfn-gateway-write")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kfn-gateway", "namespace": "kfn-system"}]


def operator_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = by_component(objs, "operator")["Deployment"]
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    return c


def service_url(svc: dict[str, Any], port: str = "http") -> str:
    p = next(p for p in svc["spec"]["ports"] if p["name"] == port)
    host = f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    return host if p["port"] == 80 else f"{host}:{p['port']}"


def test_pollers_reach_the_releases_own_gateway_scaler_and_nats_in_any_namespace(helm_bin: str) -> None:
    # Catches: pollers of a release outside kfn-system (or not named kfn) invoking kfn-gateway.kfn-system.svc, which
    # does not exist, so every mapping fails; nats:// on-failure destinations with no NATS address on the operator.
    def render(*sets: str) -> list[dict[str, Any]]:
        args = template_args(*sets, namespace="lambda", release="edge")
        return [d for d in yaml.safe_load_all(helm(helm_bin, *args).stdout) if d]

    objs = render("gateway.service.port=8080")
    env = {e["name"]: e.get("value") for e in operator_container(objs)["env"]}
    gateway = one(by_component(objs, "gateway")["Service"], "Service")
    assert env["KFN_POLLER_GATEWAY_URL"] == service_url(gateway) == "http://kfn-edge-gateway.lambda.svc:8080"
    assert env["KFN_URL_BASE"] == env["KFN_POLLER_GATEWAY_URL"]  # status.url names a gateway that exists
    assert env["KFN_POLLER_SCALER_URL"] == service_url(one(by_component(objs, "scaler")["Service"], "Service"))
    (worker,) = by_component(objs, "async-worker")["Deployment"]
    cmd = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert env["KFN_NATS_URL"] == cmd[cmd.index("--nats-url") + 1] == "nats://kfn-edge-nats.lambda.svc:4222"
    # no scaler: the pollers report lag nowhere rather than to a Service that is not there; no async: no NATS
    env = {e["name"]: e.get("value") for e in operator_container(render("scaler.enabled=false", "async.enabled=false"))["env"]}
    assert env["KFN_POLLER_SCALER_URL"] == "" and "KFN_NATS_URL" not in env


def test_tracing_and_url_base_flags_are_passed_only_when_set(render: Render) -> None:
    # Catches: docs telling users to set --otlp-endpoint / --url-base that the chart has no value for.
    def gateway_command(objs: list[dict[str, Any]]) -> list[str]:
        return one(objs, "Deployment", "kfn-gateway")["spec"]["template"]["spec"]["containers"][0]["command"]

    plain = render()
    assert "--otlp-endpoint" not in operator_container(plain)["command"] + gateway_command(plain)
    assert "--url-base" not in operator_container(plain)["command"]
    objs = render("operator.otlpEndpoint=http://otel.obs.svc:4318", "gateway.otlpEndpoint=http://otel.obs:4318",
                  "operator.urlBase=https://lambda.example.com")
    op, gw = operator_container(objs), gateway_command(objs)
    assert op["command"][op["command"].index("--otlp-endpoint") + 1] == "http://otel.obs.svc:4318"
    assert op["command"][op["command"].index("--url-base") + 1] == "https://lambda.example.com"
    assert "KFN_URL_BASE" not in {e["name"] for e in op["env"]}  # the flag wins; no second source of the same value
    assert gw[gw.index("--otlp-endpoint") + 1] == "http://otel.obs:4318"
