"""The stream side: DynamoDB Streams → SNS, and the adaptive pacer fed by its watermark.

Against moto's server over HTTP: its SNS (PublishBatch), its SQS (dead letters), its DynamoDB
Streams (DescribeStream, GetShardIterator, GetRecords) and the state table. SNS's refusals are
made by a client that passes every call to moto and marks chosen entries failed.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest

from actionrunner.dynamo import BatchWriter
from actionrunner.errors import MalformedStreamRecord, UnknownWatermark
from actionrunner.pacing import AdaptivePacer, PaceLimits, WatermarkPublisher, WatermarkStore
from actionrunner.settings import Settings
from actionrunner.streams import StreamProcessor, parse, sqs_dead_letter, streams_client
from actionrunner.streams import handler as lambda_handler
from actionrunner.streams.poller import Capacity, StreamPoller

pytestmark = pytest.mark.integration


# -- factories ---------------------------------------------------------------------------------
def record(key: str, seq: int, *, name: str = "MODIFY", created: float | None = None,
           n: int = 0) -> dict[str, Any]:
    """A DynamoDB stream record as Lambda hands it over."""
    return {"eventID": uuid.uuid4().hex, "eventName": name, "eventSource": "aws:dynamodb",
            "dynamodb": {"ApproximateCreationDateTime": created or time.time(),
                         "Keys": {"pk": {"S": key}}, "SequenceNumber": str(10**20 + seq),
                         "NewImage": {"pk": {"S": key}, "n": {"N": str(n)}},
                         "StreamViewType": "NEW_IMAGE"}}


class RecordingSNS:
    """moto's SNS client, recording every entry SNS accepted (in order); entries whose message
    mentions a key in ``refuse`` come back Failed (SNS refused them), ``calls_failing`` whole
    calls raise."""

    def __init__(self, client: Any, refuse: set[str] = frozenset(), calls_failing: int = 0) -> None:  # type: ignore[assignment]
        self.client, self.refuse, self.calls_failing = client, refuse, calls_failing
        self.accepted: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def publish_batch(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            if self.calls_failing > 0:
                self.calls_failing -= 1
                raise ConnectionError("reset by peer")
        entries = kwargs["PublishBatchRequestEntries"]
        refused = [e for e in entries if json.loads(e["Message"])["keys"]["pk"] in self.refuse]
        sent = [e for e in entries if e not in refused]
        response = self.client.publish_batch(TopicArn=kwargs["TopicArn"],
                                             PublishBatchRequestEntries=sent) if sent else \
            {"Successful": [], "Failed": []}
        with self.lock:
            ok = {s["Id"] for s in response["Successful"]}
            self.accepted += [e for e in sent if e["Id"] in ok]
        return {"Successful": response["Successful"], "Failed": response["Failed"] + [
            {"Id": e["Id"], "Code": "InternalError", "Message": "refused", "SenderFault": False}
            for e in refused]}

    def order_by_key(self) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = defaultdict(list)
        for entry in self.accepted:
            message = json.loads(entry["Message"])
            seen[message["keys"]["pk"]].append(int(message["sequenceNumber"]))
        return seen


@pytest.fixture
def topic(settings: Settings) -> str:
    return str(settings.client("sns").create_topic(
        Name=f"changes-{uuid.uuid4().hex[:8]}.fifo", Attributes={"FifoTopic": "true"})["TopicArn"])


@pytest.fixture
def dlq(settings: Settings) -> str:
    return str(settings.client("sqs").create_queue(
        QueueName=f"stream-dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"])


def dead_letters(settings: Settings, url: str) -> list[dict[str, Any]]:
    sqs, found = settings.client("sqs"), []
    for _ in range(5):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        found += [json.loads(m["Body"]) for m in messages]
        if not messages and found:
            break
    return found


# -- the processor -----------------------------------------------------------------------------
def test_changes_are_published_in_order_per_key_ten_a_call(settings: Settings, topic: str) -> None:
    # Given 60 changes of 6 keys, interleaved
    records = [record(f"k{i % 6}", i, n=i) for i in range(60)]
    sns = RecordingSNS(settings.client("sns"))
    processor = StreamProcessor(sns, topic, parallelism=3)
    # When the processor handles the batch
    outcome = processor.process(records)
    # Then every change was published once, each key's in sequence order, in few calls
    assert outcome.published == 60 and not outcome.failed and not outcome.dead
    order = sns.order_by_key()
    assert sorted(order) == [f"k{i}" for i in range(6)]
    assert all(seqs == sorted(seqs) and len(seqs) == 10 for seqs in order.values())
    # (a call holds one change of a key: 3 lanes of 2 keys × 10 changes → 10 calls of 2 a lane)
    assert processor.calls == 30
    groups = {e["MessageGroupId"] for e in sns.accepted}
    assert len(groups) == 6 and all(e["MessageDeduplicationId"] for e in sns.accepted)
    processor.close()
    # And changes of distinct keys go ten a call
    one_lane = StreamProcessor(sns, topic, parallelism=1)
    assert one_lane.process([record(f"d{i}", 100 + i) for i in range(50)]).published == 50
    assert one_lane.calls == 5


def test_a_refused_change_holds_its_keys_later_changes_and_is_reported(settings: Settings,
                                                                        topic: str) -> None:
    # Given SNS refuses the changes of key k1, and k2 is fine
    records = [record(k, i) for i, k in enumerate(["k2", "k1", "k2", "k1", "k2"])]
    sns = RecordingSNS(settings.client("sns"), refuse={"k1"})
    outcome = StreamProcessor(sns, topic, parallelism=2).process(records)
    # Then k2's changes are all published, none of k1's (its second waits behind its first)
    assert sns.order_by_key() == {"k2": [10**20, 10**20 + 2, 10**20 + 4]}
    assert outcome.failed == [str(10**20 + 1), str(10**20 + 3)]
    # And Lambda is told to retry from k1's first change
    assert outcome.batch_item_failures == [{"itemIdentifier": str(10**20 + 1)}]
    response = {"batchItemFailures": outcome.batch_item_failures}
    assert json.loads(json.dumps(response)) == response


def test_a_publish_call_that_fails_fails_its_records_only(settings: Settings, topic: str) -> None:
    records = [record(f"k{i}", i) for i in range(15)]
    sns = RecordingSNS(settings.client("sns"), calls_failing=1)
    outcome = StreamProcessor(sns, topic, parallelism=1).process(records)
    # the first call (10 changes) failed; the next five went out
    assert outcome.published == 5 and outcome.failed == [str(10**20 + i) for i in range(10)]
    assert len(sns.accepted) == 5


def test_malformed_records_are_dead_lettered_with_their_reason(settings: Settings, topic: str,
                                                               dlq: str) -> None:
    # Given a batch with good records and five kinds of bad ones
    good = [record("a", 1), record("b", 2)]
    no_keys = record("c", 3)
    del no_keys["dynamodb"]["Keys"]
    bad_seq = record("d", 4)
    bad_seq["dynamodb"]["SequenceNumber"] = "12ab"
    bad_event = record("e", 5, name="UPSERT")
    bad_time = record("f", 6)
    bad_time["dynamodb"]["ApproximateCreationDateTime"] = "yesterday"
    bad_image = record("g", 7)
    bad_image["dynamodb"]["NewImage"] = {"n": {"Q": "1"}}
    batch = [good[0], no_keys, "not a record", bad_seq, bad_event, bad_time, bad_image, good[1]]
    sns = RecordingSNS(settings.client("sns"))
    store = WatermarkStore(f"wm-{uuid.uuid4().hex[:8]}", table=settings.state_table,
                           client=settings.client("dynamodb"))
    processor = StreamProcessor(sns, topic, dead_letter=sqs_dead_letter(settings.client("sqs"), dlq),
                                watermark=WatermarkPublisher(store, every=0))
    # When it is processed
    outcome = processor.process(batch)
    # Then the good ones are published, every bad one is in the dead-letter queue with its reason
    assert outcome.published == 2 and not outcome.failed
    reasons = sorted(r for _, r in outcome.dead)
    assert len(reasons) == 6
    for expected in ("dynamodb.Keys is missing", "a record is a JSON object",
                     "SequenceNumber is '12ab'", "eventName is 'UPSERT'", "'yesterday', not a time",
                     "cannot be made a message"):
        assert any(expected in r for r in reasons), (expected, reasons)
    letters = dead_letters(settings, dlq)
    assert sorted(letter["reason"] for letter in letters) == reasons
    # And nothing is lost: published + dead-lettered = the batch, and the watermark counts them
    watermark = store.read()
    assert watermark is not None and watermark.count == len(batch)


def test_without_a_dead_letter_a_malformed_record_fails_for_the_mapping_to_take(
        settings: Settings, topic: str) -> None:
    bad = record("x", 2)
    bad["eventName"] = None
    outcome = StreamProcessor(RecordingSNS(settings.client("sns")), topic).process(
        [record("w", 1), bad, record("y", 3)])
    assert outcome.published == 2
    assert outcome.batch_item_failures == [{"itemIdentifier": str(10**20 + 2)}]


def test_parse_names_the_problem() -> None:
    with pytest.raises(MalformedStreamRecord, match="no 'dynamodb' object"):
        parse({"eventName": "INSERT"})
    change = parse(record("k", 5, created=1_800_000_000.5))
    assert (change.created, change.sequence, change.event_name) == \
        (1_800_000_000.5, str(10**20 + 5), "MODIFY")
    # GetRecords (boto3) gives a datetime; Lambda an epoch number: the same time either way
    as_boto = record("k", 5)
    as_boto["dynamodb"]["ApproximateCreationDateTime"] = datetime.datetime.fromtimestamp(
        1_800_000_000.5, tz=datetime.UTC)
    assert parse(as_boto).created == 1_800_000_000.5


def test_the_lambda_handler_reports_partial_failures(settings: Settings, topic: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"wm-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ACTIONRUNNER_STREAM_TOPIC_ARN", topic)
    monkeypatch.setenv("ACTIONRUNNER_STREAM_WATERMARK", name)
    monkeypatch.setattr(lambda_handler, "_processor", None)
    bad = record("b", 2)
    bad["dynamodb"]["SequenceNumber"] = None
    answer = lambda_handler.handler({"Records": [record("a", 1), bad, record("c", 3)]})
    assert answer == {"batchItemFailures": [{"itemIdentifier": "#1"}]}
    watermark = WatermarkStore(name, table=settings.state_table,
                               client=settings.client("dynamodb")).read()
    assert watermark is not None and watermark.count == 2  # the two published


# -- the pacer and the watermark ----------------------------------------------------------------
def test_a_pacer_naming_a_watermark_nobody_publishes_is_refused(settings: Settings) -> None:
    with pytest.raises(UnknownWatermark, match="no stream consumer has published a watermark named"):
        AdaptivePacer.from_settings("orders", PaceLimits(floor=1, ceiling=10, lag_bound=5),
                                    watermark=f"nobody-{uuid.uuid4().hex[:6]}")


def test_pacers_of_one_downstream_share_one_rate(settings: Settings) -> None:
    # Given a consumer's watermark, and two pacers (two workers) of the same downstream
    name = f"shared-{uuid.uuid4().hex[:8]}"
    client = settings.client("dynamodb")
    WatermarkStore(name, table=settings.state_table, client=client).publish(None, 0)
    limits = PaceLimits(floor=10, ceiling=1000, lag_bound=5, initial=400)
    one = AdaptivePacer(name, limits, watermark=name, table=settings.state_table, client=client)
    two = AdaptivePacer(name, limits, watermark=name, table=settings.state_table, client=client)
    one.take(1)
    two.take(1)
    # When one is throttled and cuts the rate
    one.throttled()
    one.control()  # (take and throttled run a step themselves, at most every 0.1-0.2 s)
    assert one.rate == 200
    # Then the other paces at the cut rate from its next token on, and both take slots of it
    two.take(1)
    assert two.rate == 200
    # And an increase decided from a rate that is no longer stored does not apply
    assert two.bucket.set_rate(300, decided_from=400, reason="keeping-up") == 200


def make_stream_table(settings: Settings) -> tuple[str, str]:
    name = f"items-{uuid.uuid4().hex[:8]}"
    created = settings.client("dynamodb").create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    return name, created["TableDescription"]["LatestStreamArn"]


def test_the_adaptive_pacer_keeps_a_slow_consumer_within_the_bound(settings: Settings,
                                                                   topic: str) -> None:
    # Given a stream-enabled table and its processor at 60 records/s, publishing its watermark
    table, stream = make_stream_table(settings)
    store = WatermarkStore(table, table=settings.state_table, client=settings.client("dynamodb"))
    publisher = WatermarkPublisher(store)
    publisher.flush()
    processor = StreamProcessor(settings.client("sns"), topic, watermark=publisher)
    lags: list[float] = []

    class Trace:
        def write(self, text: str) -> None:
            lags.extend(float(f) - float(c) for _, c, f in (line.split() for line in text.splitlines()))

        def flush(self) -> None:
            pass

    poller = StreamPoller(streams_client(settings), stream, processor, batch_size=20,
                          capacity=Capacity(60), start="TRIM_HORIZON", trace=Trace())  # type: ignore[arg-type]
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        # When 400 items are written through a BatchWriter whose ceiling (400/s) would bury the
        # consumer in ~1 s (a 6.7 s lag), paced adaptively with a 4 s bound
        bound = 4.0
        pacer = AdaptivePacer.from_settings(table, PaceLimits(floor=5, ceiling=400, lag_bound=bound,
                                                              increase=60), watermark=table)
        with BatchWriter(table, pacer=pacer, client=settings.client("dynamodb")) as writer:
            for i in range(400):
                writer.put({"pk": f"item#{i}", "n": i})
        deadline = time.monotonic() + 60
        while len(lags) < 400 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        poller.stop()
        thread.join(15)
        processor.close()
    # Then every record was published, none later than the bound
    assert len(lags) == 400 and writer.stats.written == 400
    changes = [(round(t, 1), round(r), why, lag) for t, r, why, lag, _ in pacer.stats.history
               if why not in ("steady",)]
    assert max(lags) <= bound, f"worst lag {max(lags):.2f} s; pace: {changes}"
    # And it did not just crawl: it paced above the consumer's capacity at some point (so the
    # bound held because it followed the lag — by a cut, or by climbing no faster than the drain)
    assert max(r for _, r, *_ in pacer.stats.history) > 60, changes
    watermark = store.read()
    assert watermark is not None and watermark.count >= 400  # (a retried ADD may count twice)


def test_the_backfill_action_refuses_a_bad_watermark_name_and_an_unknown_one(settings: Settings) -> None:
    from actionrunner.errors import ActionInputError
    from tasks.backfill import backfill_items

    # a name with characters a watermark cannot have: refused when the call is made
    with pytest.raises(ActionInputError, match="watermark"):
        backfill_items.prepare(kwargs={"table": "items", "start": 0, "count": 1,
                                       "watermark": "no spaces!"})
    # a well-formed name nobody publishes: the run fails naming it, and nothing is written
    result = backfill_items.apply(kwargs={"table": "items-nowhere", "start": 0, "count": 1,
                                          "watermark": f"nobody-{uuid.uuid4().hex[:6]}"})
    assert result.state == "FAILURE" and "no stream consumer has published" in str(result.result)
