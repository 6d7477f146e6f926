"""The local moto keeps FIFO order when several received messages of one group come back together
(actionrunner/moto_serve.py's SQS fix; SQS itself always does)."""

from __future__ import annotations

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
