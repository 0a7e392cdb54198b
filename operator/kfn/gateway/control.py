"""STAND-IN (gwdata) for gwapi's read-only control-plane calls, until gwapi's branch lands."""

from __future__ import annotations

from dataclasses import dataclass

from kfn.gateway import errors
from kfn.gateway.view import CatalogView


@dataclass(frozen=True)
class ApiSettings:
    region: str = "us-east-1"
    default_namespace: str = "default"
    pool_size: int = 1000
    unreserved_min: int = 100


def handle(method: str, path: str, query: dict[str, list[str]], view: CatalogView,
           settings: ApiSettings) -> tuple[int, dict[str, str], bytes]:
    return errors.wire(errors.UnknownOperationException(f"no operation for {method} {path}"))
