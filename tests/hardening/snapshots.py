"""Whole-state snapshots to compare or scan: every table row, every Redis key and value."""

from __future__ import annotations

import base64
import json

import redis
from sqlalchemy import MetaData, create_engine, select


def database_dump(database_url: str) -> dict[str, list[str]]:
    """Every row of every table, as sorted reprs per table (order-free, comparable)."""
    engine = create_engine(database_url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            return {
                name: sorted(repr(tuple(row)) for row in connection.execute(select(table)))
                for name, table in sorted(metadata.tables.items())
                if name != "alembic_version"
            }
    finally:
        engine.dispose()


def _value(client: redis.Redis, key: bytes) -> object:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key)
    if kind == b"hash":
        return client.hgetall(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"set":
        return client.smembers(key)
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    return f"<{kind!r}>"


def redis_bytes(base_url: str) -> bytes:
    """Every key and value of every non-empty database of a Redis server, as one blob."""
    admin = redis.Redis.from_url(f"{base_url}/0")
    try:
        databases = [int(name[2:]) for name in admin.info("keyspace")]
    finally:
        admin.close()
    parts: list[bytes] = []
    for number in databases:
        client = redis.Redis.from_url(f"{base_url}/{number}")
        try:
            for key in client.scan_iter(count=1000):
                parts.append(key + b" " + repr(_value(client, key)).encode())
        finally:
            client.close()
    return b"\n".join(parts)


def celery_messages(broker_url: str, queues: list[str]) -> str:
    """Every Celery message in the queues and in `unacked`, bodies and headers decoded."""
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    try:
        raw: list[str] = []
        for queue in queues:
            raw.extend(map(str, client.lrange(queue, 0, -1)))
        raw.extend(json.dumps(json.loads(entry)[0]) for entry in client.hvals("unacked"))
    finally:
        client.close()
    texts = []
    for item in raw:
        message = json.loads(item)
        texts.append(base64.b64decode(message["body"]).decode("utf-8", "replace"))
        texts.append(json.dumps(message["headers"]))
    return "\n".join(texts)
