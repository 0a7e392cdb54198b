"""What the gateway's Lambda API reads: the catalog of Functions, FunctionVersions and Aliases it watches.

:class:`CatalogView` is the read-only port the pure API code (``control``, ``arn``) depends on; the gateway's
watch-fed cache implements it, :class:`StaticCatalog` is the in-memory one for tests. Objects are raw custom
resources as the API server returns them (``metadata``, ``spec``, ``status`` dicts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kfn import names


class CatalogView(Protocol):
    """Read-only view of kfn's resources across the namespaces a gateway serves."""

    def namespaces(self) -> set[str]:
        """Namespaces the gateway serves (each one Lambda account)."""
        ...

    def function(self, ns: str, name: str) -> dict[str, Any] | None:
        """The Function CR named *name* in *ns*, or None."""
        ...

    def functions(self, ns: str) -> list[dict[str, Any]]:
        """Every Function CR in *ns*."""
        ...

    def versions(self, ns: str, function: str) -> list[dict[str, Any]]:
        """The FunctionVersion CRs of *function* in *ns* (``spec.functionName == function``)."""
        ...

    def aliases(self, ns: str, function: str) -> list[dict[str, Any]]:
        """The Alias CRs of *function* in *ns* (``spec.functionName == function``)."""
        ...

    def ready_environments(self, ns: str, function: str, version: str) -> int:
        """How many execution environments of one version (``$LATEST`` or a number) are ready now."""
        ...

    def rolling_out(self, ns: str, function: str, version: str) -> bool:
        """Whether the version's Deployment still runs environments of an earlier template (a rollout in progress)."""
        ...


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _spec_function(obj: Mapping[str, Any]) -> str | None:
    value = (obj.get("spec") or {}).get("functionName")
    return value if isinstance(value, str) else None


@dataclass
class StaticCatalog:
    """An in-memory :class:`CatalogView` built from lists of CRs (tests, offline tools).

    ``environments`` maps ``(namespace, function, version)`` to the number of ready environments;
    ``extra_namespaces`` are served namespaces that hold no object; ``rolling`` the versions whose Deployment is
    rolling out.
    """

    objects: list[dict[str, Any]] = field(default_factory=list)
    environments: dict[tuple[str, str, str], int] = field(default_factory=dict)
    extra_namespaces: set[str] = field(default_factory=set)
    rolling: set[tuple[str, str, str]] = field(default_factory=set)  # versions whose Deployment rolls out

    @classmethod
    def of(cls, objects: Iterable[Mapping[str, Any]], **kwargs: Any) -> StaticCatalog:
        return cls([dict(o) for o in objects], **kwargs)

    def _kind(self, kind: str, ns: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind and _key(o)[0] == ns]

    def namespaces(self) -> set[str]:
        return {_key(o)[0] for o in self.objects} | set(self.extra_namespaces)

    def function(self, ns: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self._kind(names.FUNCTION_KIND, ns) if _key(o)[1] == name), None)

    def functions(self, ns: str) -> list[dict[str, Any]]:
        return self._kind(names.FUNCTION_KIND, ns)

    def versions(self, ns: str, function: str) -> list[dict[str, Any]]:
        return [o for o in self._kind(names.FUNCTION_VERSION_KIND, ns) if _spec_function(o) == function]

    def aliases(self, ns: str, function: str) -> list[dict[str, Any]]:
        return [o for o in self._kind(names.ALIAS_KIND, ns) if _spec_function(o) == function]

    def ready_environments(self, ns: str, function: str, version: str) -> int:
        return self.environments.get((ns, function, names.lambda_version(version)), 0)

    def rolling_out(self, ns: str, function: str, version: str) -> bool:
        return (ns, function, names.lambda_version(version)) in self.rolling
