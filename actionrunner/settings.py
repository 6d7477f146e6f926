"""One typed settings object for the whole deployment.

Every ``ACTIONRUNNER_*`` environment variable (or a ``.env`` file in the working directory) maps
to a field here. The AWS endpoint and region follow boto3's own conventions (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_SQS``, ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_REGION``), so the same code runs
against real AWS or the local emulator::

    >>> from actionrunner.settings import Settings
    >>> Settings(queue_name="orders.fifo").dlq_name
    'actions-dlq.fifo'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import constants as C

#: What an admin API token may do.
Scope = Literal["submit", "admin"]
#: The AWS services a :meth:`Settings.client` is made for.
Service = Literal["sqs", "dynamodb", "s3", "sns", "cloudwatch"]
#: Every :data:`Scope`.
SCOPES: tuple[Scope, ...] = ("submit", "admin")


def is_scope(value: str) -> TypeGuard[Scope]:
    return value in SCOPES


def _submit_only() -> list[Scope]:
    return ["submit"]


class ApiToken(BaseModel):
    """One bearer token of the admin API (only its SHA-256 is kept)."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(default_factory=_submit_only)


def lane_dlq_name(queue: str) -> str:
    """The DLQ of a lane: ``bulk.fifo`` → ``bulk-dlq.fifo``."""
    return queue.removesuffix(".fifo") + "-dlq.fifo"


def _fifo_name(value: str, field: str) -> str:
    if not value.endswith(".fifo"):
        raise ValueError(
            f"{field}={value!r} must end with '.fifo': ActionRunner only runs on SQS FIFO queues "
            f"(try {value + '.fifo'!r})"
        )
    if len(value) > 80:
        raise ValueError(f"{field}={value!r} is longer than SQS's 80 characters")
    return value


class Settings(BaseSettings):
    """ActionRunner's settings. Environment prefix ``ACTIONRUNNER_``."""

    model_config = SettingsConfigDict(
        env_prefix=C.ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    # -- queues ------------------------------------------------------------------------------
    #: The SQS FIFO queue actions are sent to and workers receive from.
    queue_name: str = C.DEFAULT_QUEUE_NAME
    #: The FIFO dead-letter queue.
    dlq_name: str = C.DEFAULT_DLQ_NAME
    #: More queues (lanes) besides ``queue_name``, comma separated FIFO names: an action goes on
    #: one with ``@action(queue="bulk.fifo")``; each has its own DLQ, ``bulk-dlq.fifo``
    #: (:meth:`dlq_of`). A worker consumes every queue unless ``-Q`` names some.
    lanes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Receives after which SQS itself moves a message to the DLQ (the crash safety net).
    max_receive_count: int = Field(default=10, ge=1, le=1000)
    #: Seconds a received message stays hidden; short, so a crashed worker's messages return fast.
    visibility_timeout: int = Field(default=30, ge=0, le=C.SQS_MAX_VISIBILITY_SECONDS)
    #: Seconds SQS keeps a message (queue and DLQ).
    message_retention_seconds: int = Field(default=1_209_600, ge=60, le=1_209_600)
    #: Largest message accepted at send time; also the queue's MaximumMessageSize.
    max_message_bytes: int = Field(default=C.SQS_MAX_MESSAGE_BYTES, ge=1024, le=C.SQS_MAX_MESSAGE_BYTES)
    #: How messages are encoded: ``compact`` (JSON text, a third of stock's bytes; see
    #: actionrunner/sqs/codec.py) or ``celery`` (stock kombu: base64 around base64). Workers read both.
    wire_format: Literal["compact", "celery"] = "compact"
    #: S3 bucket for payloads larger than ``max_message_bytes`` (claim check; None: refuse them).
    payload_bucket: str | None = None
    #: Largest task body a worker decodes: decompressed bodies and claim-checked payloads are read
    #: up to this many bytes and refused past it (checked while reading, never after); sends over
    #: it are refused too.
    max_decoded_bytes: int = Field(default=C.DEFAULT_MAX_DECODED_BYTES, ge=C.SQS_MAX_MESSAGE_BYTES)
    #: Task bodies larger than this are zlib-compressed (compact format; None: never).
    compress_over_bytes: int | None = Field(default=65_536, ge=0)
    #: Long-poll wait of a receive. 20 on AWS; short against moto, whose long poll spins a CPU.
    wait_time_seconds: int = Field(default=C.SQS_MAX_WAIT_SECONDS, ge=0, le=C.SQS_MAX_WAIT_SECONDS)
    #: Pause between receives that returned nothing (and between checks while the worker is full).
    polling_interval: float = Field(default=0.1, ge=0)
    #: Seconds between visibility extensions of held messages (default: a third of the timeout).
    heartbeat_interval: float | None = Field(default=None, gt=0)
    #: A message whose ``expires`` passed before it ran: ``dead-letter`` (to the DLQ, error type
    #: ``MessageExpired``) or ``discard`` (deleted); either way an ``expired`` line and metric.
    expired: Literal["dead-letter", "discard"] = "dead-letter"
    #: Times a claim-checked payload is tried when S3 answers 403 (a missing object where
    #: s3:ListBucket is not granted, or a refusal) or an error of the moment, before the message
    #: is dead-lettered (``PayloadMissing``) instead of holding its group.
    payload_fetch_attempts: int = Field(default=5, ge=1, le=100)
    #: Redrives after which a dead letter stays in the DLQ (with the reason) unless the redrive
    #: is forced (``actionrunner dlq redrive --force``, ``{"force": true}``).
    max_redrives: int = Field(default=3, ge=1, le=1000)
    #: Key that signs the ``actionrunner.*`` attributes a worker records on a dead letter (HMAC):
    #: ``dlq list``/``show`` then show only signed ones as the worker's. Unset: a dead letter SQS
    #: moved itself (``DeadLetterQueueSourceArn``) keeps none as the worker's (see docs/dlq.md).
    signing_key: SecretStr | None = None
    #: On SIGTERM, seconds running actions get to finish before the worker releases their
    #: messages and stops (waiting messages are released at once).
    shutdown_timeout: float = Field(default=60.0, ge=0)

    # -- actions -----------------------------------------------------------------------------
    #: Extra modules of actions to import in every process (comma separated).
    imports: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Modules of the deployment's own actions, imported before ``imports`` (none by default:
    #: the package never imports a ``tasks`` module of its own accord; this repository's
    #: ``celeryconfig.py`` names its ``tasks``).
    default_imports: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Python module that holds Celery settings (``celeryconfig.py`` at the repository root).
    celery_config_module: str = "celeryconfig"

    # -- state on DynamoDB ------------------------------------------------------------------
    #: The one DynamoDB table of ActionRunner's state (idempotency, run status, rate buckets...):
    #: partition key ``pk`` (S), TTL attribute ``expires_at``.
    state_table: str = "actionrunner-state"
    #: Idempotency for every action that does not say otherwise (``@action(idempotent=False)``):
    #: a run claims its key in the state table, and a completed key returns its saved result
    #: instead of running again.
    idempotency: bool = True
    #: Seconds a key is kept (a completed run's record with its saved result, and the admin API's
    #: ``Idempotency-Key``): a keyed call (``@action(key=...)``, ``Idempotency-Key``, beat's slot)
    #: sent again within this time is not run again; it returns the saved result.
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1)
    #: Seconds a run's claim of its key lasts unless renewed (default: the visibility timeout, so
    #: a dead worker's key is free about when its message comes back). A running action renews
    #: it every third of this, so it runs out only when the worker died.
    idempotency_lease_seconds: float | None = Field(default=None, gt=0)
    #: Seconds a run's lease on its action's ``max_concurrency`` lasts unless renewed (every
    #: third of it, while the run lasts): a dead worker's slots are free again after this long.
    concurrency_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    #: Seconds a run over its action's ``max_concurrency`` waits before it asks again (jittered
    #: between half and 1.5 times this; no attempt is used).
    concurrency_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    #: On Lambda, seconds a record over its action's ``max_concurrency`` waits in the invocation
    #: for a slot before it is reported (each report costs a receive: see docs/concurrency.md).
    concurrency_lambda_wait_seconds: float = Field(default=5.0, ge=0, le=600)

    # -- admin API and run status ------------------------------------------------------------
    #: Bearer tokens of the admin API, stored hashed: a JSON list of
    #: ``{"name": ..., "sha256": <hex digest of the token>, "scopes": ["submit", "admin"]}``
    #: (``actionrunner api-token`` makes one).
    api_tokens: list[ApiToken] = Field(default_factory=list)
    #: Largest request body the admin API accepts, in bytes: a larger one is answered 413
    #: without being read (by its Content-Length, or once that many bytes have streamed in).
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Which runs get their status (queued, running, succeeded...) written to the state table:
    #: ``api`` (those the admin API accepted: GET /v1/runs/{id} follows them), ``all`` (also
    #: ``.delay()``: two more DynamoDB writes per action; Celery's ``task_ignore_result`` is then
    #: off, so ``AsyncResult.get()`` / ``.state`` work, see actionrunner/results.py), or ``off``.
    #: An action declared with ``@action(ignore_result=False)`` keeps its runs whatever this says.
    run_status: Literal["api", "all", "off"] = "api"
    #: Seconds a run's status is kept (DynamoDB TTL).
    run_status_ttl_seconds: int = Field(default=7 * 86_400, ge=60)

    #: ``emf``: lifecycle lines carry CloudWatch Embedded Metric Format metrics; ``off``: plain.
    metrics: Literal["emf", "off"] = "emf"

    # -- Flower, `celery inspect`, `celery events` (actionrunner.sqs.monitor) ---------------
    #: Workers answer remote control (`celery inspect`, Flower's worker pages) through a
    #: standard SQS queue each, long-polled while somebody watches.
    remote_control: bool = True
    #: Seconds without a control message and without an event listener (Flower, `celery
    #: events`) after which a worker's mailbox dozes: long-polled 20 s at a time whatever
    #: ``wait_time_seconds``, its events sent nowhere (an idle worker: 6 requests a minute, not
    #: 9); a command still reaches it at once. An action, a command or a new listener wakes it.
    #: 0: never doze.
    mailbox_doze_after: float = Field(default=120.0, ge=0)
    #: A dozing mailbox's long poll in seconds (capped at SQS's 20; shorter only for tests).
    mailbox_doze_poll: float = Field(default=60.0, gt=0, le=60)
    #: Task events for Flower / `celery events`: ``all``, ``failures`` (failed, retried,
    #: rejected and revoked tasks, plus worker heartbeats), or ``off``. They cost nothing while
    #: nobody listens: an event is sent only to the queues of running listeners.
    task_events: Literal["all", "failures", "off"] = "all"
    #: Name prefix of the monitoring queues (standard, 60 s retention), created on demand by
    #: workers and listeners and deleted when they stop (IAM can scope to ``<prefix>*``).
    monitor_queue_prefix: str = Field(default="actionrunner-mon-", pattern=r"^[A-Za-z0-9_-]{1,30}$")

    # -- logs --------------------------------------------------------------------------------
    log_level: str = "INFO"
    #: ``json`` (one JSON object per line) or ``console`` (coloured, for humans).
    log_format: Literal["json", "console"] = "json"

    # -- AWS (boto3's own variable names) ----------------------------------------------------
    region: str = Field(
        default=C.DEFAULT_REGION,
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "ACTIONRUNNER_REGION"),
    )
    sqs_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"),
    )
    dynamodb_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"),
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    )
    #: Seconds to wait for a TCP connection to an AWS endpoint before giving up.
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Seconds to wait for an AWS answer (a receive waits ``wait_time_seconds`` more) before the
    #: request is given up and retried.
    read_timeout: float = Field(default=20.0, gt=0)
    #: Seconds to wait for the state table's answer (DynamoDB answers in milliseconds) before
    #: trying the request again (idempotency store, shared rate limits, run status).
    state_read_timeout: float = Field(default=5.0, gt=0)

    @field_validator("queue_name")
    @classmethod
    def _queue_is_fifo(cls, value: str) -> str:
        return _fifo_name(value, "ACTIONRUNNER_QUEUE_NAME")

    @field_validator("dlq_name")
    @classmethod
    def _dlq_is_fifo(cls, value: str) -> str:
        return _fifo_name(value, "ACTIONRUNNER_DLQ_NAME")

    @field_validator("lanes", mode="before")
    @classmethod
    def _split_lanes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("lanes")
    @classmethod
    def _lanes_are_fifo(cls, value: list[str]) -> list[str]:
        for name in value:
            _fifo_name(name, "ACTIONRUNNER_LANES")
            _fifo_name(lane_dlq_name(name), "the DLQ of ACTIONRUNNER_LANES")
        return list(dict.fromkeys(value))

    @field_validator("imports", "default_imports", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sqs_endpoint_url", "dynamodb_endpoint_url", "s3_endpoint_url")
    @classmethod
    def _endpoint_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"AWS endpoint {value!r} needs a scheme, e.g. 'http://127.0.0.1:{C.LOCAL_MOTO_PORT}'"
            )
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _queues_differ(self) -> Settings:
        if self.queue_name == self.dlq_name:
            raise ValueError(
                f"ACTIONRUNNER_QUEUE_NAME and ACTIONRUNNER_DLQ_NAME are both {self.queue_name!r}; "
                "the dead-letter queue must be a queue of its own"
            )
        taken = {self.queue_name, self.dlq_name}
        for lane in self.lanes:
            if lane in taken or lane_dlq_name(lane) in taken:
                raise ValueError(f"ACTIONRUNNER_LANES: {lane!r} (or its DLQ "
                                 f"{lane_dlq_name(lane)!r}) is already another queue")
            taken |= {lane, lane_dlq_name(lane)}
        return self

    @property
    def queues(self) -> list[str]:
        """Every queue actions travel on: ``queue_name``, then the lanes."""
        return list(dict.fromkeys([self.queue_name, *self.lanes]))

    def dlq_of(self, queue: str) -> str:
        """The DLQ of ``queue``: ``dlq_name`` for ``queue_name``, ``<lane>-dlq.fifo`` for a lane."""
        return self.dlq_name if queue == self.queue_name else lane_dlq_name(queue)

    @property
    def lease_seconds(self) -> float:
        """How long an idempotency claim lasts unless renewed."""
        return float(self.idempotency_lease_seconds or self.visibility_timeout or 30)

    @property
    def all_imports(self) -> list[str]:
        """Every module of actions to import, the deployment's own first."""
        seen: dict[str, None] = dict.fromkeys([*self.default_imports, *self.imports])
        return list(seen)

    def client(self, service: Service,
               config: Any = None, **kw: Any) -> Any:
        """A boto3 client for ``service`` at the configured endpoint and region (``config``: a
        botocore ``Config`` merged over the defaults)."""
        import boto3
        from botocore.config import Config

        endpoint = {"sqs": self.sqs_endpoint_url, "dynamodb": self.dynamodb_endpoint_url,
                    "s3": self.s3_endpoint_url}.get(service, self.dynamodb_endpoint_url)
        defaults = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.wait_time_seconds + self.read_timeout,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=32,
        )
        if service == "s3" and endpoint:  # emulators serve buckets by path, not by host name
            defaults = defaults.merge(Config(s3={"addressing_style": "path"}))
        return boto3.session.Session().client(
            service, region_name=self.region, endpoint_url=endpoint,
            config=defaults.merge(config) if config is not None else defaults, **kw
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment.

    Invalid values raise :class:`~actionrunner.errors.InvalidSettings` naming each variable.
    """
    from .errors import InvalidSettings

    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings.of(exc) from None
