"""The incident, as it happens without ActionRunner: an admin endpoint that migrates a table inline.

``POST /migrate?table=T`` rewrites every item of T before it answers, as fast as DynamoDB takes it
(BatchWriteItem, 25 at a time, UnprocessedItems retried) — the request holds for the whole job and
the table takes the full write burst. Served by ``bench.incident`` for comparison only.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from actionrunner import get_settings
from actionrunner.dynamo import MAX_BATCH_WRITE as DYNAMODB_MAX_BATCH
from actionrunner.dynamo import write_batch
from tasks.migrate import transform

app = FastAPI(title="naive admin endpoint")


@app.post("/migrate")
def migrate(table: str) -> dict[str, Any]:
    client = get_settings().client("dynamodb")
    written, key = 0, None
    while True:
        page = client.scan(TableName=table, Limit=500, **({"ExclusiveStartKey": key} if key else {}))
        items = page.get("Items", [])
        for first in range(0, len(items), DYNAMODB_MAX_BATCH):
            batch = items[first : first + DYNAMODB_MAX_BATCH]
            write_batch(client, table, [{"PutRequest": {"Item": transform(i)}} for i in batch])
        written += len(items)
        key = page.get("LastEvaluatedKey")
        if not key:
            return {"written": written}
