"""The EventSourceMapping resource: a queue, stream or schedule feeding a function.

Each kfn source type is held to the Lambda limits of the AWS source it
resembles: ``sqs`` like SQS, ``kafka`` like self-managed Kafka, ``rabbitmq``
like Amazon MQ, ``redis`` and ``nats`` like Kinesis (ordered streams with
shards), ``schedule`` like an EventBridge schedule (one event per tick).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from kfn.models.base import FUNCTION_NAME_PATTERN, CommonStatus, Matches, Range, Rule, SpecModel, parse_spec
from kfn.models.function import KubeName

SOURCE_TYPES = ("sqs", "kafka", "rabbitmq", "redis", "nats", "schedule")
STREAM_SOURCES = ("kafka", "redis", "nats")
# Lambda's default batch size per comparable source (used when batchSize is unset).
DEFAULT_BATCH_SIZE = {"sqs": 10, "kafka": 100, "rabbitmq": 100, "redis": 100, "nats": 100, "schedule": 1}

Str = Annotated[StrictStr, Field(min_length=1, max_length=1024)]
Servers = Annotated[list[Str], Field(min_length=1, max_length=16)]
# Lambda's self-managed Kafka: SelfManagedEventSource.Endpoints KAFKA_BOOTSTRAP_SERVERS is an EndpointLists, 1-10
# items of Endpoint, 1-300 characters each (botocore service model)
KAFKA_MAX_BOOTSTRAP_SERVERS = 10
KafkaServers = Annotated[
    list[Annotated[StrictStr, Field(min_length=1, max_length=300)]],
    Field(min_length=1, max_length=KAFKA_MAX_BOOTSTRAP_SERVERS),
]
# CreateEventSourceMapping's FunctionName is a NamespacedFunctionName, 1-256 characters (botocore service model;
# not the 140 of the FunctionName shape the other operations take). kfn's pattern (a 63-character name, a
# 128-character qualifier) stays under it.
ESM_FUNCTION_NAME_MAX = 256
# name, or name:qualifier where the qualifier is an alias, a version or $LATEST
FUNCTION_REF_PATTERN = FUNCTION_NAME_PATTERN[:-1] + r"(:(\$LATEST|[a-zA-Z0-9_-]{1,128}))?$"


class SecretKeyRef(SpecModel):
    """A key of a Secret holding a credential (password, connection URL)."""

    name: KubeName = Field(description="Secret in the mapping's namespace.")
    key: Str = Field(description="Key in the Secret.")


class SqsSource(SpecModel):
    """An SQS-compatible queue."""

    queue_url: Str = Field(alias="queueUrl", description="Queue URL.")
    endpoint_url: Str | None = Field(None, alias="endpointUrl", description="SQS API endpoint (compatible servers).")
    region: Annotated[StrictStr, Field(max_length=64)] | None = Field(None, description="Region for request signing.")
    credentials_secret_ref: KubeName | None = Field(
        None, alias="credentialsSecretRef", description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."
    )


class KafkaSource(SpecModel):
    """Kafka topic read by a consumer group (Lambda self-managed Kafka)."""

    bootstrap_servers: KafkaServers = Field(alias="bootstrapServers", description="host:port of the brokers (1-10).")
    topic: Annotated[StrictStr, Field(min_length=1, max_length=249)] = Field(description="The one topic to read.")
    consumer_group_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = Field(
        None, alias="consumerGroupId", description="Consumer group (default: derived from the mapping)."
    )


class RabbitMqSource(SpecModel):
    """A RabbitMQ queue (Lambda Amazon MQ for RabbitMQ)."""

    url_secret_ref: SecretKeyRef = Field(alias="urlSecretRef", description="Secret key with the amqp:// URL.")
    queue: Annotated[StrictStr, Field(min_length=1, max_length=1000)] = Field(description="Queue to consume.")
    virtual_host: Annotated[StrictStr, Field(max_length=200)] | None = Field(
        None, alias="virtualHost", description="RabbitMQ virtual host."
    )


class RedisSource(SpecModel):
    """A Redis stream read by a consumer group."""

    address: Str = Field(description="host:port of the Redis server.")
    stream: Str = Field(description="Stream key.")
    consumer_group: Str = Field("kfn", alias="consumerGroup", description="Consumer group (created if missing).")
    password_secret_ref: SecretKeyRef | None = Field(
        None, alias="passwordSecretRef", description="Secret key with the password."
    )


class NatsSource(SpecModel):
    """A NATS JetStream stream (durable consumer)."""

    servers: Servers = Field(description="nats:// URLs of the servers.")
    stream: Str = Field(description="JetStream stream name.")
    subject: Str | None = Field(None, description="Subject filter within the stream.")
    consumer: Str | None = Field(None, description="Durable consumer name (default: derived from the mapping).")


class ScheduleSource(SpecModel):
    """A schedule: one invocation per tick (EventBridge Scheduler expressions)."""

    expression: Annotated[
        StrictStr,
        Field(max_length=256),
        # EventBridge: the singular unit for 1, the plural otherwise (rate(1 minutes), rate(5 minute) are refused)
        Matches(r"^(cron\(.+\)|rate\((1 (minute|hour|day)|([2-9]|[1-9][0-9]+) (minutes|hours|days))\))$",
                "must be cron(...), rate(1 minute|hour|day) or rate(N minutes|hours|days) with N > 1"),
    ] = Field(description="cron(min hour day-of-month month day-of-week year), rate(1 minute|hour|day) or "
                          "rate(N minutes|hours|days) with N > 1.")
    # EventBridge Scheduler's ScheduleExpressionTimezone: 1-50 characters (botocore service model)
    timezone: Annotated[StrictStr, Field(min_length=1, max_length=50)] = Field(
        "UTC", description="IANA time zone of cron().")
    input: Annotated[StrictStr, Field(max_length=8192)] | None = Field(
        None, description="The event to send: a JSON document as a string, e.g. '{\"job\": \"nightly\"}'.")


class Source(SpecModel):
    """Exactly one source type."""

    __rules__ = (
        Rule(
            cel="[" + ", ".join(f"has(self.{t})" for t in SOURCE_TYPES) + "].filter(x, x).size() == 1",
            message="must set exactly one of " + ", ".join(SOURCE_TYPES),
            check=lambda s: sum(getattr(s, t) is not None for t in SOURCE_TYPES) == 1,
        ),
    )

    sqs: SqsSource | None = None
    kafka: KafkaSource | None = None
    rabbitmq: RabbitMqSource | None = None
    redis: RedisSource | None = None
    nats: NatsSource | None = None
    schedule: ScheduleSource | None = None

    @property
    def type(self) -> str:
        """The one source type that is set."""
        return next(t for t in SOURCE_TYPES if getattr(self, t) is not None)


class Filter(SpecModel):
    """One Lambda event filter pattern (JSON)."""

    pattern: Annotated[StrictStr, Field(min_length=1, max_length=4096)] = Field(
        description='Lambda filter pattern (JSON), e.g. {"data": {"status": ["paid"]}}.'
    )


class FilterCriteria(SpecModel):
    """Events matching any filter are sent; others are dropped."""

    filters: Annotated[list[Filter], Field(max_length=5)] = Field(default_factory=list, description="At most 5 filters.")


class OnFailure(SpecModel):
    """Where records of a batch that failed every retry go."""

    destination: Annotated[StrictStr, Field(min_length=1, max_length=350)] = Field(
        description="Queue, topic or stream reference."
    )


class EsmDestinationConfig(SpecModel):
    """Where records of failed batches go."""

    on_failure: OnFailure | None = Field(None, alias="onFailure", description="Destination for failed batches.")


QUEUE_SOURCES = ("sqs", "rabbitmq")


class ScalingConfig(SpecModel):
    """Lambda ScalingConfig: how many batches of a queue may be invoked at once."""

    maximum_concurrency: Annotated[StrictInt, Range(2, 1000)] | None = Field(
        None, alias="maximumConcurrency",
        description="Queues only: concurrent invocations this mapping may make (Lambda: 2-1000).")


def _stream(source: Source) -> bool:
    return source.type in STREAM_SOURCES


# settings Lambda has only for stream sources: (camelCase, attribute)
STREAM_ONLY = (
    ("startingPosition", "starting_position"),
    ("maximumRetryAttempts", "maximum_retry_attempts"),
    ("maximumRecordAgeSeconds", "maximum_record_age_seconds"),
    ("bisectBatchOnFunctionError", "bisect_batch_on_function_error"),
)
_STREAM_CEL = " || ".join(f"has(self.source.{t})" for t in STREAM_SOURCES)
_QUEUE_CEL = " || ".join(f"has(self.source.{t})" for t in QUEUE_SOURCES)


class EventSourceMappingSpec(SpecModel):
    """EventSourceMapping.spec (Lambda CreateEventSourceMapping)."""

    __rules__ = (
        Rule(
            cel="!has(self.source.sqs) || !has(self.batchSize) || self.batchSize <= 10 "
            "|| (has(self.maximumBatchingWindowSeconds) && self.maximumBatchingWindowSeconds >= 1)",
            message="an sqs batchSize above 10 needs maximumBatchingWindowSeconds of at least 1",
            field_path=".maximumBatchingWindowSeconds",
            check=lambda m: m.source.sqs is None
            or m.batch_size is None
            or m.batch_size <= 10
            or (m.maximum_batching_window_seconds or 0) >= 1,
        ),
        Rule(
            cel="!has(self.source.schedule) || !has(self.batchSize) || self.batchSize == 1",
            message="a schedule sends one event per tick: batchSize must be 1",
            field_path=".batchSize",
            check=lambda m: m.source.schedule is None or m.batch_size in (None, 1),
        ),
        Rule(
            cel=f"!({_STREAM_CEL}) || has(self.startingPosition)",
            message="startingPosition is required for stream sources (kafka, redis, nats)",
            field_path=".startingPosition",
            reason="FieldValueRequired",
            check=lambda m: not _stream(m.source) or m.starting_position is not None,
        ),
        *(
            Rule(
                cel=f"({_STREAM_CEL}) || !has(self.{name})",
                message=f"{name} applies only to stream sources (kafka, redis, nats)",
                field_path=f".{name}",
                reason="FieldValueForbidden",
                check=lambda m, attr=attr: _stream(m.source) or getattr(m, attr) is None,
            )
            for name, attr in STREAM_ONLY
        ),
        Rule(
            # Lambda's Amazon MQ source takes no FunctionResponseTypes (AWS, "Event source mapping parameters" for
            # Amazon MQ and RabbitMQ): a function error requeues the whole batch
            cel="!has(self.source.rabbitmq) || !has(self.functionResponseTypes) || size(self.functionResponseTypes) == 0",
            message="functionResponseTypes does not apply to rabbitmq: a function error requeues the whole batch",
            field_path=".functionResponseTypes",
            reason="FieldValueForbidden",
            check=lambda m: m.source.rabbitmq is None or not m.function_response_types,
        ),
        Rule(
            cel=f"({_QUEUE_CEL}) || !has(self.scalingConfig)",
            message="scalingConfig applies only to queue sources (sqs, rabbitmq)",
            field_path=".scalingConfig",
            reason="FieldValueForbidden",
            check=lambda m: m.source.type in QUEUE_SOURCES or m.scaling_config is None,
        ),
        Rule(
            cel="has(self.startingPosition) && self.startingPosition == 'AT_TIMESTAMP' "
            "? has(self.startingPositionTimestamp) : !has(self.startingPositionTimestamp)",
            message="startingPositionTimestamp is required with AT_TIMESTAMP and allowed only with it",
            field_path=".startingPositionTimestamp",
            check=lambda m: (m.starting_position == "AT_TIMESTAMP") == (m.starting_position_timestamp is not None),
        ),
    )

    function_name: Annotated[
        StrictStr,
        Field(max_length=ESM_FUNCTION_NAME_MAX),
        Matches(FUNCTION_REF_PATTERN, "must be a function name, optionally with :alias or :version"),
    ] = Field(alias="functionName", description="Function name, or name:alias / name:version.")
    source: Source = Field(description="Exactly one of sqs, kafka, rabbitmq, redis, nats, schedule.")
    enabled: StrictBool = Field(True, description="false pauses polling.")
    batch_size: Annotated[StrictInt, Range(1, 10000)] | None = Field(
        None, alias="batchSize", description="Records per invocation; default 10 for sqs, 1 for schedule, else 100."
    )
    maximum_batching_window_seconds: Annotated[StrictInt, Range(0, 300, "seconds")] | None = Field(
        None, alias="maximumBatchingWindowSeconds", description="Wait up to this long to fill a batch."
    )
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] | None = Field(
        None, alias="startingPosition", description="Streams only: where a new consumer starts."
    )
    starting_position_timestamp: Annotated[StrictStr, Field(max_length=64)] | None = Field(
        None, alias="startingPositionTimestamp", description="RFC 3339 time, with AT_TIMESTAMP."
    )
    filter_criteria: FilterCriteria | None = Field(None, alias="filterCriteria")
    maximum_retry_attempts: Annotated[StrictInt, Range(0, 10000, also=(-1,))] | None = Field(
        None, alias="maximumRetryAttempts", description="Streams only: -1 retries until the record expires."
    )
    maximum_record_age_seconds: Annotated[StrictInt, Range(60, 604800, "seconds", also=(-1,))] | None = Field(
        None, alias="maximumRecordAgeSeconds", description="Streams only: -1 means no limit."
    )
    bisect_batch_on_function_error: StrictBool | None = Field(
        None, alias="bisectBatchOnFunctionError", description="Streams only: split a failing batch and retry."
    )
    function_response_types: Annotated[list[Literal["ReportBatchItemFailures"]], Field(max_length=1)] = Field(
        default_factory=list, alias="functionResponseTypes", description="[ReportBatchItemFailures] or []."
    )
    destination_config: EsmDestinationConfig | None = Field(None, alias="destinationConfig")
    parallelization_factor: Annotated[StrictInt, Range(1, 10)] | None = Field(
        None, alias="parallelizationFactor", description="Concurrent batches per partition/shard (ordering per key)."
    )
    scaling_config: ScalingConfig | None = Field(None, alias="scalingConfig")

    @property
    def effective_batch_size(self) -> int:
        """batchSize, or Lambda's default for the comparable source."""
        return self.batch_size if self.batch_size is not None else DEFAULT_BATCH_SIZE[self.source.type]


EsmState = Literal["Creating", "Enabling", "Enabled", "Disabling", "Disabled", "Updating", "Deleting"]


class EventSourceMappingStatus(CommonStatus):
    """EventSourceMapping.status, written by the operator."""

    state: EsmState | None = Field(None, description="Lambda State of the mapping.")
    state_transition_reason: str | None = Field(None, alias="stateTransitionReason")
    last_processing_result: str | None = Field(None, alias="lastProcessingResult")


def parse_event_source_mapping_spec(data: Any) -> EventSourceMappingSpec:
    """Validate an EventSourceMapping spec dict; raises SpecError naming the field and the limit."""
    return parse_spec(EventSourceMappingSpec, data)
