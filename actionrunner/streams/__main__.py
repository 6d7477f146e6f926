"""``python -m actionrunner.streams``: the stream processor as a local process (see
:mod:`.poller`). Stops on SIGINT/SIGTERM, after publishing its last watermark."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

from ..errors import ConfigurationError
from ..local import Stop
from ..logging import configure
from ..pacing.watermark import WatermarkPublisher, WatermarkStore, check_name
from ..settings import get_settings
from . import sns_client, streams_client
from .poller import Capacity, StreamPoller
from .processor import StreamProcessor, sqs_dead_letter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actionrunner.streams", description=__doc__)
    parser.add_argument("--table", required=True, help="the stream-enabled DynamoDB table")
    parser.add_argument("--topic", required=True,
                        help="SNS topic name or ARN (a name ending .fifo: a FIFO topic, per-key order)")
    parser.add_argument("--watermark", default=None, help="watermark name (default: the table's)")
    parser.add_argument("--create", action="store_true",
                        help="create the topic, the dead-letter queue and the table (with a "
                             "stream) if missing (local stacks)")
    parser.add_argument("--dlq", default=None, help="SQS queue name for records that cannot be published")
    parser.add_argument("--capacity", type=float, default=None, help="records per second at most")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--idle-wait", type=float, default=0.1,
                        help="seconds between reads of a shard with nothing new")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--from", dest="start", choices=["latest", "trim-horizon"], default="latest")
    parser.add_argument("--trace", default=None,
                        help="append 'sequence created finished' per published record to this file")
    parser.add_argument("--slow-at", default=None, metavar="SECONDS:CAPACITY",
                        help="change the capacity SECONDS after the first record (benchmarks)")
    args = parser.parse_args(argv)
    configure(get_settings().log_level)
    settings = get_settings()
    dynamodb = settings.client("dynamodb")
    if args.create and args.table not in dynamodb.list_tables()["TableNames"]:
        dynamodb.create_table(
            TableName=args.table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    try:
        table = dynamodb.describe_table(TableName=args.table)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        raise ConfigurationError(f"no DynamoDB table {args.table!r} (create it, or pass --create)") from None
    stream_arn = table.get("LatestStreamArn")
    if not stream_arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
        raise ConfigurationError(f"table {args.table!r} has no stream enabled "
                                 "(StreamSpecification StreamEnabled, e.g. NEW_AND_OLD_IMAGES)")
    sns = sns_client(settings)
    topic = args.topic
    if not topic.startswith("arn:"):
        attributes = {"FifoTopic": "true"} if topic.endswith(".fifo") else {}
        if args.create:
            topic = sns.create_topic(Name=topic, Attributes=attributes)["TopicArn"]
        else:
            found = [t["TopicArn"] for page in sns.get_paginator("list_topics").paginate()
                     for t in page["Topics"] if t["TopicArn"].rsplit(":", 1)[-1] == topic]
            if not found:
                raise ConfigurationError(f"no SNS topic named {topic!r} (create it, or pass --create)")
            topic = found[0]
    dead_letter = None
    if args.dlq:
        sqs = settings.client("sqs")
        url = (sqs.create_queue(QueueName=args.dlq) if args.create
               else sqs.get_queue_url(QueueName=args.dlq))["QueueUrl"]
        dead_letter = sqs_dead_letter(sqs, url)
    store = WatermarkStore(check_name(args.watermark or args.table), table=settings.state_table,
                           client=settings.client("dynamodb"))
    publisher = WatermarkPublisher(store)
    publisher.flush()  # known at once: a pacer naming it may start now
    processor = StreamProcessor(sns, topic, parallelism=args.parallelism, watermark=publisher,
                                dead_letter=dead_letter)
    capacity = Capacity(args.capacity)
    with contextlib.ExitStack() as stack:
        trace = stack.enter_context(open(args.trace, "a")) if args.trace else None  # noqa: SIM115
        poller = StreamPoller(streams_client(settings), stream_arn, processor,
                              batch_size=args.batch_size, capacity=capacity,
                              start=args.start.upper().replace("-", "_"), trace=trace,
                              idle_wait=args.idle_wait)
        stop = Stop()
        if args.slow_at:
            seconds, rate = _slow_at(args.slow_at)

            def slow_down() -> None:
                while not stop.event.is_set() and poller.finished == 0:
                    stop.event.wait(0.02)
                if not stop.event.wait(seconds):
                    capacity.set(rate)

            threading.Thread(target=slow_down, daemon=True).start()
        runner = threading.Thread(target=poller.run, daemon=True)
        runner.start()
        stop.wait(poll=lambda: not runner.is_alive())
        poller.stop()
        runner.join(15)
        processor.close()
    return 0


def _slow_at(text: str) -> tuple[float, float]:
    try:
        seconds, rate = (float(part) for part in text.split(":"))
    except ValueError:
        raise SystemExit(f"--slow-at {text!r}: expected SECONDS:CAPACITY, e.g. 10:200") from None
    if seconds < 0 or rate <= 0:
        raise SystemExit(f"--slow-at {text!r}: SECONDS must be >= 0 and CAPACITY > 0")
    return seconds, rate


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
