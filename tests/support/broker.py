"""What the Celery broker holds, read straight from Redis."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from envcat.workers.factory import QUEUES
from tests.support.api import (
    redis_dump,
)


def broker_messages(broker_url: str) -> str:
    """All broker data, with every Celery message body decoded from base64."""
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    texts = [redis_dump(client)]
    raw: list[Any] = []
    for queue in QUEUES:
        raw += client.lrange(queue, 0, -1)
    raw += [json.loads(v)[0] for v in client.hvals("unacked")] if client.exists("unacked") else []
    for item in raw:
        message: dict[str, Any] = item if isinstance(item, dict) else json.loads(item)
        texts.append(base64.b64decode(message["body"]).decode("utf-8", "replace"))
        texts.append(json.dumps(message["headers"]))
    client.close()
    return "\n".join(texts)
