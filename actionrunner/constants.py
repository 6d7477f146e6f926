"""Every name, prefix and limit ActionRunner relies on, in one place."""

from __future__ import annotations

#: Environment prefix of every ActionRunner setting (``ACTIONRUNNER_QUEUE_NAME``...).
ENV_PREFIX = "ACTIONRUNNER_"

#: Default SQS FIFO queue the actions travel on.
DEFAULT_QUEUE_NAME = "actions.fifo"
#: Default FIFO dead-letter queue.
DEFAULT_DLQ_NAME = "actions-dlq.fifo"
#: Region used when neither ``AWS_REGION`` nor ``AWS_DEFAULT_REGION`` is set.
DEFAULT_REGION = "us-east-1"

#: SQS's hard cap on one message (body plus attributes), in bytes.
SQS_MAX_MESSAGE_BYTES = 1_048_576
#: Default bound on a decoded body (``ACTIONRUNNER_MAX_DECODED_BYTES``), in bytes.
DEFAULT_MAX_DECODED_BYTES = 8 * SQS_MAX_MESSAGE_BYTES
#: SQS bills every started chunk of this many bytes as one request.
SQS_BILLING_CHUNK_BYTES = 65_536
#: Entries per SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch (and SNS PublishBatch).
SQS_MAX_BATCH = 10
#: Longest long poll SQS allows.
SQS_MAX_WAIT_SECONDS = 20
#: Visibility can never be extended past this many seconds after the receive.
SQS_MAX_VISIBILITY_SECONDS = 43_200
#: FIFO deduplication window: a repeated MessageDeduplicationId within it is dropped.
SQS_DEDUP_WINDOW_SECONDS = 300
#: MessageGroupId and MessageDeduplicationId are at most this long.
SQS_MAX_ID_LENGTH = 128

#: Address the embedded emulator binds to: loopback only.
LOCAL_HOST = "127.0.0.1"
#: Port of moto's server (DynamoDB, S3, SNS, CloudWatch... and SQS unless a faster one serves it).
LOCAL_MOTO_PORT = 5055
#: Port of the fast SQS-compatible server (fauxqs) used for deep local backlogs.
LOCAL_SQS_PORT = 5056
#: Credentials the local emulator accepts (any value works; these are never real).
LOCAL_ACCESS_KEY = "test"
LOCAL_SECRET_KEY = "test"

#: Name of the kombu transport alias ActionRunner registers (``broker_url = "actionrunner://"``).
TRANSPORT_ALIAS = "actionrunner"

#: Message header that gives one call its own idempotency key (instead of the one from the
#: action's ``key=`` or inputs): ``apply_async(..., headers={IDEMPOTENCY_KEY_HEADER: "..."})``.
#: ``celery beat`` sets it to the schedule slot, so that every slot runs once.
IDEMPOTENCY_KEY_HEADER = "actionrunner_idempotency_key"

#: Message header that carries the call id: made once per ``.delay()`` / ``apply_async`` /
#: ``delay_many`` entry / API submit, it stays with the message through redeliveries and retries.
#: An action without ``key=`` derives its MessageDeduplicationId and idempotency key from it, so
#: two calls with equal inputs are two runs, while a redelivered message is still the same call.
#: A message without it (sent before call ids) falls back to a key over its inputs.
CALL_ID_HEADER = "ar_call"
