"""The one list that ties the stacks to the settings object.

Every setting a stack needs is a template parameter whose default is the setting's default and
whose bounds are the setting's own (its pydantic ``ge`` / ``le``). The queues and the table are
built from the parameter, and every service and function receives the same parameter as its
``ACTIONRUNNER_*`` variable, so what runs reads exactly what was deployed::

    >>> [p.env for p in SETTING_PARAMETERS][:2]
    ['ACTIONRUNNER_QUEUE_NAME', 'ACTIONRUNNER_DLQ_NAME']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Le

from .. import constants as C
from ..settings import Settings
from .cfn import parameter, ref

#: SQS queue names: what SQS allows for a FIFO queue (Settings also checks the ``.fifo``).
FIFO_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,75}\.fifo$"
#: DynamoDB table names.
TABLE_NAME_PATTERN = r"^[A-Za-z0-9_.-]{3,255}$"
#: S3 bucket names, or empty (no bucket).
BUCKET_NAME_PATTERN = r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


@dataclass(frozen=True)
class SettingParameter:
    """A template parameter that carries one field of :class:`~actionrunner.settings.Settings`."""

    name: str  #: the CloudFormation parameter
    field: str  #: the Settings field
    description: str
    pattern: str | None = None
    services_only: bool = False  #: read by the services only (not by the core stack's resources)

    @property
    def env(self) -> str:
        """The variable the services read it from (``ACTIONRUNNER_`` + the field's name)."""
        return f"{C.ENV_PREFIX}{self.field.upper()}"

    def spec(self, settings: Settings) -> dict[str, Any]:
        """The parameter's definition, its default taken from ``settings``."""
        info = Settings.model_fields[self.field]
        value = getattr(settings, self.field)
        if isinstance(value, bool) or not isinstance(value, int):
            text = "" if value is None else str(value)  # None: the setting is off
            return parameter("String", self.description, text, AllowedPattern=self.pattern)
        bounds = {type(m): m for m in info.metadata}
        low, high = bounds.get(Ge), bounds.get(Le)
        return parameter("Number", self.description, value,
                         MinValue=getattr(low, "ge", None), MaxValue=getattr(high, "le", None))


#: Settings the stacks take as parameters (order: as they appear in the template).
SETTING_PARAMETERS: tuple[SettingParameter, ...] = (
    SettingParameter("QueueName", "queue_name", "The SQS FIFO queue actions travel on.",
                     FIFO_NAME_PATTERN),
    SettingParameter("DeadLetterQueueName", "dlq_name", "The FIFO dead-letter queue.",
                     FIFO_NAME_PATTERN),
    SettingParameter("StateTableName", "state_table",
                     "The DynamoDB state table (idempotency, run status, rate buckets).",
                     TABLE_NAME_PATTERN),
    SettingParameter("MaxReceiveCount", "max_receive_count",
                     "Receives after which SQS moves a message to the DLQ (the crash safety net)."),
    SettingParameter("VisibilityTimeout", "visibility_timeout",
                     "Seconds a received message stays hidden (workers extend it while they "
                     "hold the message; on Lambda it must be at least the function's timeout)."),
    SettingParameter("MessageRetentionSeconds", "message_retention_seconds",
                     "Seconds SQS keeps a message (queue and DLQ)."),
    SettingParameter("MaxMessageBytes", "max_message_bytes",
                     "Largest message: the queues' MaximumMessageSize and the send-time check."),
    SettingParameter("PayloadBucketName", "payload_bucket",
                     "S3 bucket for payloads over MaxMessageBytes (claim check; the core stack "
                     "creates it). Empty: such payloads are refused at send time.",
                     BUCKET_NAME_PATTERN),
    SettingParameter("MonitorQueuePrefix", "monitor_queue_prefix",
                     "Name prefix of the monitoring queues (Flower, celery inspect, celery events) "
                     "that workers and Flower create and delete themselves.",
                     r"^[A-Za-z0-9_-]{1,30}$", services_only=True),
    SettingParameter("TaskEvents", "task_events",
                     "Task events for Flower: all, failures or off (free while nobody listens).",
                     r"^(all|failures|off)$", services_only=True),
)
BY_NAME = {p.name: p for p in SETTING_PARAMETERS}
BY_FIELD = {p.field: p for p in SETTING_PARAMETERS}


def setting_parameters(settings: Settings, *, services: bool = True) -> dict[str, Any]:
    """The ``Parameters`` entries of every setting, defaults from ``settings`` (``services=False``:
    only those the core stack's resources use)."""
    return {p.name: p.spec(settings) for p in SETTING_PARAMETERS if services or not p.services_only}


def service_environment(extra: dict[str, Any] | None = None, *, region: bool = True,
                        lanes: list[str] | None = None) -> dict[str, Any]:
    """The variables every service and function gets: each setting parameter as its
    ``ACTIONRUNNER_*`` variable, JSON logs, the extra action modules, the lanes the template was
    rendered with (``ACTIONRUNNER_LANES``: they are its resources, not a parameter), and the region
    (``region``: Lambda sets ``AWS_REGION`` itself and refuses it)."""
    env: dict[str, Any] = {p.env: ref(p.name) for p in SETTING_PARAMETERS}
    if lanes:
        env[f"{C.ENV_PREFIX}LANES"] = ",".join(lanes)
    # the image's and the package's own `tasks` (the library imports none unless told)
    env.update({f"{C.ENV_PREFIX}DEFAULT_IMPORTS": "tasks", f"{C.ENV_PREFIX}IMPORTS": ref("ActionModules"),
                f"{C.ENV_PREFIX}LOG_FORMAT": "json"})
    if region:
        env["AWS_REGION"] = ref("AWS::Region")
    env.update(extra or {})
    return dict(sorted(env.items()))


def common_parameters() -> dict[str, Any]:
    """Parameters every runtime stack (ECS, Lambda) shares besides the settings."""
    return {
        "ActionModules": parameter(
            "String", "Extra modules of actions to import, comma separated "
            "(ACTIONRUNNER_IMPORTS; the package's own `tasks` is loaded first: "
            "ACTIONRUNNER_DEFAULT_IMPORTS).", ""),
        "LogRetentionDays": parameter(
            "Number", "Days the log lines are kept.", 30,
            AllowedValues=[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827,
                           3653]),
        "ExtraPolicyArns": parameter(
            "CommaDelimitedList", "Managed policies added to the roles that run actions (what your "
            "actions themselves touch: their tables, buckets...). Empty: none.", ""),
    }
