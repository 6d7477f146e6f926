"""The local moto behaves as AWS where ActionRunner's tests and benchmarks depend on it
(actionrunner/moto_serve.py's fixes): FIFO order when several received messages of one group come
back together, and a cancelled transaction undoes no other request's write."""

from __future__ import annotations

import contextlib
import time

import boto3
import pytest
from moto import mock_aws

from actionrunner.moto_serve import patch_sqs_fifo_redelivery_order


def test_messages_of_a_group_that_come_back_together_come_back_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):  # moto in process, not the server
        monkeypatch.delenv(name, raising=False)
    patch_sqs_fifo_redelivery_order()
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="order.fifo", Attributes={
            "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
        for n in range(4):
            sqs.send_message(QueueUrl=url, MessageBody=str(n), MessageGroupId="g")
        first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
        sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
        lost = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=1)
        assert [m["Body"] for m in lost["Messages"]] == ["1", "2", "3"]  # its answer "lost"
        assert not sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages")
        time.sleep(1.2)
        again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert [m["Body"] for m in again] == ["1", "2", "3"]


def _count_with_cancelled_transactions_alongside(monkeypatch: pytest.MonkeyPatch) -> int:
    import threading

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        db.put_item(TableName="t", Item={"pk": {"S": "taken"}})
        refused = {"Put": {"TableName": "t", "Item": {"pk": {"S": "taken"}},
                           "ConditionExpression": "attribute_not_exists(pk)"}}

        def cancel() -> None:
            for _ in range(150):
                with contextlib.suppress(db.exceptions.TransactionCanceledException):
                    db.transact_write_items(TransactItems=[refused])

        canceller = threading.Thread(target=cancel)
        canceller.start()
        for _ in range(150):
            db.update_item(TableName="t", Key={"pk": {"S": "counter"}}, UpdateExpression="ADD n :one",
                           ExpressionAttributeValues={":one": {"N": "1"}})
        canceller.join()
        item = db.get_item(TableName="t", Key={"pk": {"S": "counter"}})["Item"]
        return int(item["n"]["N"])


def test_a_cancelled_transaction_undoes_no_other_write(monkeypatch: pytest.MonkeyPatch) -> None:
    from actionrunner.moto_serve import patch_dynamodb_transaction_isolation

    patch_dynamodb_transaction_isolation()
    assert _count_with_cancelled_transactions_alongside(monkeypatch) == 150
