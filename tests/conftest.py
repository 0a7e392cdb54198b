"""Shared pytest configuration: the cluster fixtures every integration and e2e test uses.

Tests marked ``integration`` (need a real API server) or ``e2e`` (need real pods
on a node) get kfn's test bed, started on demand once per session (full node by
default), unless ``--kube-context``/``--kubeconfig`` or a ``KUBECONFIG`` that is
not the test bed's points at another cluster. Fixtures: ``cluster``,
``crds_installed``, ``namespace``, ``testbed_images``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from testbed import (
    say,
    REPO,
    Cluster,
    ClusterSetupError,
    external_cluster,
    pinned_kubectl,
    run_script,
    start_testbed,
    testbed_settings,
)

DESTRUCTIVE = "testbed_destructive"
IMAGES_LOADED = "KFN_TESTS_IMAGES_LOADED"  # set by the xdist controller once images.sh has loaded this tag


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kfn cluster")
    group.addoption("--kube-context", default=None,
                    help="run integration/e2e tests against this kubeconfig context instead of the test bed")
    group.addoption("--kubeconfig", default=None,
                    help="kubeconfig file for --kube-context (default: $KUBECONFIG or ~/.kube/config)")
    group.addoption("--testbed-mode", choices=("full", "control-plane"), default="full",
                    help="how the test bed starts when no cluster is running: a full node (default) or "
                         "the API server only (faster; e2e tests still add the node when they run)")
    group.addoption("--testbed-destructive", action="store_true", default=bool(os.environ.get("CI")),
                    help="run the tests that kill and tear down the test bed (default: on when $CI is set; "
                         "off otherwise, since the test bed on a machine is shared)")


# Test files that install kfn (helm, `kfn install`'s objects) or KEDA: they share cluster-wide names (the
# ClusterRoles kfn-operator, kfn-gateway, kfn-scaler; KEDA's APIService), so under pytest-xdist they run one after
# another on one worker instead of uninstalling each other's grants mid-test.
CLUSTER_WIDE_FILES = frozenset({
    "test_chart_install.py", "test_make_run_path.py", "test_keda.py", "test_gateway_install.py",
    "test_async_install.py", "test_identity.py", "test_network_isolation.py", "test_restricted.py", "test_rbac.py",
})


# Test files that need the node or the cluster to themselves; `make test` runs them one at a time after the
# parallel part (marker node_exclusive):
# - most of the node's CPU (many environments at once: burst, scale-out, provisioned floors, a dozen signed and
#   unsigned functions): beside another worker's pods, theirs would stay Pending on a two-core node;
# - test_chart_install.py installs a copy of kfn's CRDs in a group of its own, with the same resource and short
#   names (`function`, `fn`): while they exist, another test's `kubectl get function` would resolve to them.
NODE_EXCLUSIVE_FILES = frozenset({
    "test_scaling.py", "test_pc_autoscaling.py", "test_keda.py", "test_esm_lag.py", "test_code_signing.py",
    "test_gateway.py", "test_async.py", "test_file_systems.py", "test_chart_install.py",
})
NODE_EXCLUSIVE = "node_exclusive"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{DESTRUCTIVE}: stops or kills test-bed components; runs last, only on kfn's own test bed"
    )
    config.addinivalue_line("markers", f"{NODE_EXCLUSIVE}: needs the node's CPU alone; `make test` runs it serially")
    # pytest-xdist registers it too; registered here so --strict-markers holds when xdist is not loaded
    config.addinivalue_line("markers", "xdist_group(name): tests of one group run on one pytest-xdist worker")


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that hands tests to pytest-xdist workers (`pytest -n N`, N > 0)."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def _only_unit_tests(config: pytest.Config) -> bool:
    unit = (REPO / "tests" / "unit").resolve()
    paths = [a.split("::", 1)[0] for a in config.args if not a.startswith("-")] or ["tests"]
    return all((REPO / p).resolve().is_relative_to(unit) for p in paths)


def pytest_sessionstart(session: pytest.Session) -> None:
    """With pytest-xdist, bring the test bed up and load kfn's images once, here, before any worker starts.

    Workers' output is not shown, so the long first build (Kubernetes, images) would run silently inside one of
    them; here its progress reaches the terminal, and the workers then find everything up and cached.
    """
    config = session.config
    if not _xdist_controller(config) or _only_unit_tests(config):
        return
    settings = testbed_settings()
    if not _wants_testbed(config, settings):
        return
    full = config.getoption("--testbed-mode") == "full"
    _say(config, f"[kfn] bringing the test bed up for the workers ({'full node' if full else 'control plane only'}); "
                 "a cold machine builds Kubernetes first")
    try:
        start_testbed(full=full, write=lambda line: _say(config, line))
        if full:
            _say(config, "[kfn] building and loading kfn's images (testbed/images.sh; rebuilt only on change)")
            run_script("images.sh", write=lambda line: _say(config, line))
            # the workers start after this hook (xdist starts them trylast) and inherit the environment: they
            # skip images.sh, whose up-to-date check alone takes half a minute per worker under its lock
            os.environ[IMAGES_LOADED] = os.environ.get("KFN_IMAGE_TAG", "dev")
    except ClusterSetupError as e:
        pytest.exit(f"the test bed could not start: {e}", returncode=3)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns xdist_group marks into scheduling groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under `--dist loadgroup` a file's tests stay on one worker (its module fixtures start brokers and operators
    # once), and the files that install kfn cluster-wide share one worker.
    for item in items:
        group = "cluster-wide" if item.path.name in CLUSTER_WIDE_FILES else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))
        if item.path.name in NODE_EXCLUSIVE_FILES:
            item.add_marker(getattr(pytest.mark, NODE_EXCLUSIVE))
    # Tests that tear the test bed down run after everything else that needs it,
    # and only where nobody else is using it (CI) unless asked for.
    # The test-bed node tests that kill every component and take the cluster down (etcd wiped, the session's
    # CRDs gone) go very last, after the other destructive tests, and stay together (they share a module fixture).
    items.sort(key=lambda item: (item.get_closest_marker(DESTRUCTIVE) is not None,
                                 item.get_closest_marker(DESTRUCTIVE) is not None
                                 and item.path.name == "test_testbed_node.py"))
    if not config.getoption("--testbed-destructive"):
        skip = pytest.mark.skip(
            reason="kills and tears down the shared test bed: runs in CI ($CI set) or with --testbed-destructive")
        for item in items:
            if item.get_closest_marker(DESTRUCTIVE) is not None:
                item.add_marker(skip)


_say = say  # progress lines past pytest's capture (testbed.say)


def _wants_testbed(config: pytest.Config, settings: dict[str, str]) -> bool:
    if config.getoption("--kube-context") or config.getoption("--kubeconfig"):
        return False
    env = os.environ.get("KUBECONFIG")
    return not env or os.path.realpath(env) == os.path.realpath(settings["KUBECONFIG_PATH"])


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Cluster:
    """The cluster under test: kfn's test bed (started if needed) or the chosen context."""
    settings = testbed_settings()
    if not _wants_testbed(pytestconfig, settings):
        try:
            c = external_cluster(pytestconfig.getoption("--kubeconfig") or None,
                                 pytestconfig.getoption("--kube-context"), settings)
        except ClusterSetupError as e:
            pytest.fail(str(e), pytrace=False)
        _say(pytestconfig, f"[kfn] using cluster {c.context or '(current context)'}; full node: {c.full_node}")
        return c
    full = pytestconfig.getoption("--testbed-mode") == "full"
    _say(pytestconfig, f"[kfn] bringing the test bed up ({'full node' if full else 'control plane only'}); "
                       "a cold machine builds Kubernetes first")
    try:
        kubeconfig = start_testbed(full=full, write=lambda line: _say(pytestconfig, line))
    except ClusterSetupError as e:
        pytest.fail(str(e), pytrace=False)
    kubectl = pinned_kubectl(settings)
    assert kubectl, "testbed/up.sh finished without building kubectl"
    c = Cluster(kubeconfig=kubeconfig, context=None, full_node=full, kubectl_path=kubectl, is_testbed=True,
                settings=settings)
    if not full:
        c.full_node = c.has_ready_node()
    return c


def ensure_full_node(c: Cluster, config: pytest.Config) -> None:
    """Make sure real pods can run: add the node to a control-plane-only test bed, or skip."""
    if c.full_node:
        return
    if not c.is_testbed:
        pytest.skip(f"cluster {c.context or '(current context)'} has no Ready node for e2e tests")
    _say(config, "[kfn] an e2e test needs the node: adding it to the test bed")
    try:
        start_testbed(full=True, write=lambda line: _say(config, line))
    except ClusterSetupError as e:
        pytest.fail(str(e), pytrace=False)
    c.full_node = True


@pytest.fixture(scope="session")
def testbed_images(cluster: Cluster, pytestconfig: pytest.Config) -> list[str]:
    """kfn's images (kfn/kfn:dev, kfn/python3.11:dev …; $KFN_IMAGE_TAG for another tag) built and loaded
    into the test bed's node.

    Other clusters must have them already (e.g. `kind load docker-image`).
    """
    tag = os.environ.get("KFN_IMAGE_TAG", "dev")  # several working trees can share one node, a tag each
    names = [f"docker.io/kfn/kfn:{tag}", f"docker.io/kfn/python3.11:{tag}"]
    if not cluster.is_testbed:
        return names
    ensure_full_node(cluster, pytestconfig)
    if os.environ.get(IMAGES_LOADED) == tag:
        return names  # loaded by the pytest-xdist controller before this worker started (pytest_sessionstart)
    _say(pytestconfig, "[kfn] building and loading kfn's images (testbed/images.sh; rebuilt only on change)")
    try:
        run_script("images.sh", write=lambda line: _say(pytestconfig, line))
    except ClusterSetupError as e:
        pytest.fail(str(e), pytrace=False)
    return names


@pytest.fixture(autouse=True)
def _cluster_for_marked_tests(request: pytest.FixtureRequest) -> None:
    """Tests marked integration/e2e bring the cluster up even if they do not ask for it."""
    marks = {m.name for m in request.node.iter_markers()}
    if not marks & {"integration", "e2e"}:
        return
    c: Cluster = request.getfixturevalue("cluster")
    if "e2e" in marks:
        ensure_full_node(c, request.config)
        request.getfixturevalue("testbed_images")
    if DESTRUCTIVE in marks and not c.is_testbed:
        pytest.skip("stops test-bed components: runs only on kfn's own test bed, not on another cluster")



@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> list[str]:
    """kfn's CRDs from crds/ applied, each Established; returns their names."""
    crd_dir = REPO / "crds"
    files = sorted(p for p in crd_dir.glob("*.yaml") if p.is_file())
    if not files:
        pytest.fail("crds/ holds no CRD files (run `make crds`)", pytrace=False)
    out = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-o", "name",
                          *[arg for f in files for arg in ("-f", str(f))])
    names = [line.split("/", 1)[1] for line in out.stdout.split() if "/" in line]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    *[f"crd/{n}" for n in names])
    return names


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace ``kfn-t-<random>`` for one test, deleted (without waiting) afterwards."""
    name = f"kfn-t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "kfn.dev/test=true")
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def pytest_report_header(config: pytest.Config) -> str:
    ctx = config.getoption("--kube-context")
    return f"kfn cluster: {'context ' + ctx if ctx else 'kfn test bed (on demand)'}"

