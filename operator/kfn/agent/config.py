"""The agent's configuration: the pod contract's environment variables (and flags for local runs), validated once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """The agent's configuration is invalid; the message names the variable and the limit."""


def _parse_addr(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{field}: must be host:port with a port 1..65535 (got {value!r})")
    return (host or "0.0.0.0"), int(port)


class AgentConfig(BaseModel):
    """Everything the agent needs to know about its execution environment."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    runtime_api: str = Field("127.0.0.1:9001", alias="AWS_LAMBDA_RUNTIME_API")
    listen: str = Field("0.0.0.0:8080", alias="KFN_AGENT_LISTEN")
    function_name: str = Field("function", alias="AWS_LAMBDA_FUNCTION_NAME", min_length=1, max_length=64)
    function_version: str = Field("$LATEST", alias="AWS_LAMBDA_FUNCTION_VERSION")
    memory_mb: int = Field(128, alias="AWS_LAMBDA_FUNCTION_MEMORY_SIZE", ge=128, le=10240)
    region: str = Field("us-east-1", alias="AWS_REGION")
    timeout_seconds: int = Field(3, alias="KFN_TIMEOUT_SECONDS", ge=1, le=900)
    # Lambda's init phase limit (10 s): an init still running then is reported (INIT_REPORT Status: timeout)
    # and goes on charged to the first invocation's timeout.
    init_timeout_seconds: float = Field(10.0, alias="KFN_INIT_TIMEOUT_SECONDS", gt=0, le=900)
    function_arn: str | None = Field(None, alias="KFN_FUNCTION_ARN")
    log_format: Literal["Text", "JSON"] = Field("Text", alias="AWS_LAMBDA_LOG_FORMAT")
    execution_env: str | None = Field(None, alias="AWS_EXECUTION_ENV")  # AWS_Lambda_python3.11: INIT_START's version
    initialization_type: str = Field("on-demand", alias="AWS_LAMBDA_INITIALIZATION_TYPE")

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, v: object) -> object:
        # Lambda accepts the format case-insensitively in its API; normalise to the spec's spelling.
        if isinstance(v, str) and v.lower() in ("text", "json"):
            return "JSON" if v.lower() == "json" else "Text"
        return v

    @property
    def arn(self) -> str:
        return self.function_arn or f"arn:aws:lambda:{self.region}:000000000000:function:{self.function_name}"

    @property
    def runtime_api_addr(self) -> tuple[str, int]:
        return _parse_addr(self.runtime_api, "AWS_LAMBDA_RUNTIME_API")

    @property
    def listen_addr(self) -> tuple[str, int]:
        return _parse_addr(self.listen, "KFN_AGENT_LISTEN")


def load_config(env: Mapping[str, str], overrides: Mapping[str, object] | None = None) -> AgentConfig:
    """Validate the environment (plus command-line overrides) into an AgentConfig, or raise ConfigError."""
    fields = AgentConfig.model_fields
    data: dict[str, object] = {f.alias: env[f.alias] for f in fields.values() if f.alias and env.get(f.alias)}
    for name, value in (overrides or {}).items():
        if value is not None:
            data[fields[name].alias or name] = value
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(f"{field}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid agent configuration: " + "; ".join(problems)) from None
    cfg.runtime_api_addr, cfg.listen_addr  # noqa: B018 -- validate both addresses up front
    return cfg
