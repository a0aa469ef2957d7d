"""Connector throughput through moto (AWS's wire protocol on loopback), each figure beside
a baseline measured in the same run.

1. Pull of 1,000 secrets: a sync run (`sync.sync_link`, in this process) against the
   same boto3 calls made directly (ListSecrets pages + BatchGetSecretValue by 20).
2. Push of 1,000 keys: a sync run against bare boto3 `create_secret` x 1,000. Our run is
   measured twice: with the shared limiter at its default (40 writes/s, the figure a
   deployment sees) and with the limiter set out of the way (bench only, to show the
   code's own cost).
3. Peak per-second write rate moto saw (counted at a loopback proxy) while three real
   `celery worker` processes pushed 3 x 150 keys, against the configured limit.

Starts its own moto server, private redis-servers and SQLite database.

    python bench/connectors.py [--keys 1000] [--check]

`--check` exits 1 when (3) exceeds the configured limit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from moto.server import ThreadedMotoServer
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from envcat.core.settings import Settings
from envcat.models import Bundle, BundleKey, Key, KeyVersion, db, migrate, new_uuid
from envcat.services.connectors import links, sync
from envcat.services.runtime import create_service_app, current
from envcat.services.versions import bound_id
from envcat.workers import connector_tasks
from envcat.workers.factory import create_celery
from tests.connectors.support import (
    WRITES,
    ProviderProxy,
    aws,
    aws_connection,
    link,
    link_row,
    owner,
    running_proxy,
)
from tests.connectors.workers import eventually, start_worker, stop
from tests.support import free_port, private_redis
from tests.support.settings import make_settings

TENANT = "t-conn"


@contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset(moto: str) -> None:
    httpx.post(f"{moto}/moto-api/reset", timeout=10).raise_for_status()


def seed_bundle(name: str, count: int, prefix: str) -> str:
    """A bundle of `count` keys with first versions, by bulk insert (fast to seed)."""
    keyring = current().keyring
    bundle_id = new_uuid()
    db.session.execute(
        insert(Bundle),
        [{"id": bundle_id, "tenant_id": TENANT, "name": name, "description": "", "tags": []}],
    )
    rows, versions, entries = [], [], []
    for i in range(count):
        key_id, value = new_uuid(), f"{prefix}-value-{i}"
        rows.append(
            {
                "id": key_id,
                "tenant_id": TENANT,
                "name": f"{prefix.upper()}_{i:05d}",
                "value": keyring.encrypt(value, tenant_id=TENANT, key_id=key_id),
                "is_secret": True,
                "description": "",
                "dangerous_ok": False,
            }
        )
        versions.append(
            {
                "key_id": key_id,
                "tenant_id": TENANT,
                "version": 1,
                "size": len(value),
                "value": keyring.encrypt(value, tenant_id=TENANT, key_id=bound_id(key_id, 1)),
            }
        )
        entries.append({"bundle_id": bundle_id, "key_id": key_id, "position": i, "required": False})
    if rows:
        db.session.execute(insert(Key), rows)
        db.session.execute(insert(KeyVersion), versions)
        db.session.execute(insert(BundleKey), entries)
    db.session.commit()
    return bundle_id


def run_link(link_id: str) -> float:
    started = time.perf_counter()
    assert sync.sync_link(link_id, links.start_run(TENANT, link_id)) == "done"
    return time.perf_counter() - started


def bare_pull(moto: str, prefix: str) -> float:
    client = aws(moto)
    started = time.perf_counter()
    names: list[str] = []
    kwargs: dict[str, Any] = {"MaxResults": 100, "Filters": [{"Key": "name", "Values": [prefix]}]}
    while True:
        page = client.list_secrets(**kwargs)
        names += [s["Name"] for s in page["SecretList"]]
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    values = {}
    for start in range(0, len(names), 20):
        reply = client.batch_get_secret_value(SecretIdList=names[start : start + 20])
        values.update({v["Name"]: v["SecretString"] for v in reply["SecretValues"]})
    assert len(values) == len(names)
    return time.perf_counter() - started


def bare_push(moto: str, count: int) -> float:
    client = aws(moto)
    started = time.perf_counter()
    for i in range(count):
        client.create_secret(Name=f"bare/K_{i:05d}", SecretString=f"v{i}")
    return time.perf_counter() - started


def line(what: str, count: int, ours: float, bare: float | None) -> None:
    rate = count / ours
    if bare is None:
        print(f"{what:<58} {rate:9.0f} keys/s")
    else:
        print(
            f"{what:<58} {rate:9.0f} keys/s   bare boto3 {count / bare:7.0f} keys/s "
            f"({bare / ours:.2f}x)"
        )


def single_process(moto: str, settings: Settings, count: int) -> None:
    app = create_service_app(settings)
    with app.app_context():
        actor = owner()
        connection_id = aws_connection(actor, moto)
        client = aws(moto)
        for i in range(count):
            client.create_secret(Name=f"pull/KEY_{i:05d}", SecretString=f"pulled-{i}")
        bare = bare_pull(moto, "pull/")
        pull_bundle = seed_bundle("pull", 0, "p")
        pull_id = link(actor, connection_id, pull_bundle, prefix="pull/", direction="pull")
        line(f"pull {count} secrets (sync run)", count, run_link(pull_id), bare)

        bare = bare_push(moto, count)
        push_bundle = seed_bundle("push", count, "push")
        push_id = link(actor, connection_id, push_bundle, prefix="push/", direction="push")
        line(
            f"push {count} keys, limiter at {settings.connector_aws_write_tps:.0f}/s",
            count,
            run_link(push_id),
            bare,
        )
    fast = settings.model_copy(update={"connector_aws_write_tps": 1_000_000.0})  # bench only
    app = create_service_app(fast)
    with app.app_context():
        reset(moto)
        bare = bare_push(moto, count)
        push_id = link(
            owner(),
            aws_connection(owner(), moto, name="fast"),
            seed_bundle("push-fast", count, "fast"),
            prefix="fast/",
            direction="push",
        )
        line(f"push {count} keys, limiter out of the way", count, run_link(push_id), bare)


def three_workers(proxy: ProviderProxy, settings: Settings, directory: Path) -> int:
    app = create_service_app(settings)
    create_celery(settings, app)
    with app.app_context():
        actor = owner()
        connection_id = aws_connection(actor, proxy.url, name="workers")
        link_ids = [
            link(
                actor,
                connection_id,
                seed_bundle(f"w{n}", 150, f"w{n}"),
                prefix=f"w{n}/",
                direction="push",
            )
            for n in range(3)
        ]
        workers = [start_worker(settings, f"w{n}", directory / "workers.log") for n in range(3)]
        try:
            time.sleep(3)  # let them connect, so the three really run side by side
            for link_id in link_ids:
                connector_tasks.sync_link.delay(link_id, links.start_run(TENANT, link_id))
            eventually(lambda: all(link_row(i).run_id is None for i in link_ids), 180, "syncs")
        finally:
            for worker in workers:
                stop(worker)
    writes = sum(proxy.actions()[a] for a in WRITES)
    peak = proxy.peak_per_second()
    print(
        f"{'3 workers, 3 x 150 keys pushed: peak writes/s at the provider':<58} {peak:9d}"
        f"   limit {settings.connector_aws_write_tps:.0f}/s (AWS: 50)   writes {writes}"
    )
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        moto = stack.enter_context(moto_server())
        app_redis = stack.enter_context(private_redis(directory / "app"))
        broker = stack.enter_context(private_redis(directory / "broker"))
        settings = make_settings(
            f"sqlite:///{directory / 'envcat.db'}",
            f"{app_redis.url}/0",
            f"{broker.url}/0",
            request_ttl=60,
        )
        migrate.upgrade(settings.database_url)
        single_process(moto, settings, args.keys)
        reset(moto)
        proxy = stack.enter_context(running_proxy(moto))
        peak = three_workers(proxy, settings, directory)
    if args.check and peak > settings.connector_aws_write_tps:
        print("peak write rate above the configured limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
