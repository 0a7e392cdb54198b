"""Entry point of the ``kfn`` console script.

Each component registers a subcommand here; the subcommand modules are
imported lazily so that ``kfn --help`` stays fast and a component's heavy
dependencies load only when that component runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # "name": ("kfn.cli.name", "help"),  -- each component adds its line
    "crds": ("kfn.cli.crds", "print or write the CRDs generated from the API models"),
    "agent": ("kfn.cli.agent", "in-pod agent: Lambda Runtime API for the function, invoke endpoint for the gateway"),
    "operator": ("kfn.cli.operator", "the Kopf operator: reconciles Functions, FunctionVersions and Aliases into Kubernetes objects"),
    "install": ("kfn.cli.install", "print or apply the manifests that install kfn (CRDs, RBAC, operator)"),
    "gateway": ("kfn.cli.gateway", "the Lambda Invoke API in front of the execution environments (in-cluster or on a host)"),
    "scaler": ("kfn.cli.scaler", "the built-in scaler: demand pushed by the gateways in, version replicas out"),
    "async-worker": ("kfn.cli.asyncworker", "drains the durable async-invocation queue: retries, event age, destinations"),
    "poller": ("kfn.cli.poller", "runs one EventSourceMapping: reads its queue, stream or schedule, invokes its function"),
    "invoke": ("kfn.cli.invoke", "invoke a function like `aws lambda invoke` and show its answer"),
    "credentials": ("kfn.cli.credentials", "issue Lambda API access keys bound to ServiceAccounts (aws CLI profiles)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kfn",
        description="kfn: AWS-Lambda-like functions on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
