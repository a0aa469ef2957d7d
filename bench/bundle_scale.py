"""Big bundles and many bundles, each against a baseline from the same run.

1. A bundle of 1,000 keys: the service time of `delivery.encrypt_from_bundle` (what
   the worker runs: read the request, check the approval, load and decrypt the
   keys, seal, mark ready) against the bare primitives on the same ciphertexts
   (`keyring.decrypt` x 1,000 + one `seal_values`), interleaved, medians compared.
   Target: at most 1.5x. The database read of the 1,000 rows (`select_keys`) is
   timed alone too, to show where the rest goes.
2. A tenant with 1,000 bundles of 100 keys each (100,000 keys, seeded with bulk
   inserts): the median of the signed `GET /api/v1/bundles` on the api under
   gunicorn (gevent), against the median of `GET /healthz` on the same server.

Starts its own private redis-server, on a fresh SQLite database (or, with
`--postgres`, a fresh database on the local PostgreSQL, dropped afterwards).

    python bench/bundle_scale.py [--runs 9] [--calls 40] [--bundles 1000] [--postgres] [--check]

`--check` exits 1 when (1) is above 1.5x.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import insert

from envcat.core.sealing import encode_public_key, generate_keypair, seal_values
from envcat.core.settings import Settings
from envcat.models import Bundle, BundleKey, Key, db, migrate
from envcat.services.access_requests import delivery
from envcat.services.runtime import create_service_app, current

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from envcat.bff.apiclient import Signer
from tests.hardening.databases import temporary_postgres
from tests.hardening.flows import signed_client
from tests.hardening.processes import processes, server_environment, wait_until_healthy
from tests.support import RedisServer, free_port
from tests.support.requests import record_approval, stored_request
from tests.support.settings import make_settings
from tests.support.signed import add_member

TARGET = 1.5
BIG_TENANT, LIST_TENANT, USER = "t-big", "t-many", "u-bench"
BIG_KEYS = 1000


def _bulk_bundles(tenant_id: str, bundles: int, keys_each: int) -> list[str]:
    """Insert `bundles` bundles of `keys_each` distinct keys each; return the bundle ids."""
    keyring = current().keyring
    bundle_ids = [str(uuid.uuid4()) for _ in range(bundles)]
    db.session.execute(
        insert(Bundle),
        [
            {"id": b, "tenant_id": tenant_id, "name": f"team-{n:04d}/service", "tags": []}
            for n, b in enumerate(bundle_ids)
        ],
    )
    for n, bundle_id in enumerate(bundle_ids):
        key_ids = [str(uuid.uuid4()) for _ in range(keys_each)]
        db.session.execute(
            insert(Key),
            [
                {
                    "id": k,
                    "tenant_id": tenant_id,
                    "name": f"KEY_{n:04d}_{i:04d}",
                    "value": keyring.encrypt(f"value-{n}-{i}", tenant_id=tenant_id, key_id=k),
                }
                for i, k in enumerate(key_ids)
            ],
        )
        db.session.execute(
            insert(BundleKey),
            [{"bundle_id": bundle_id, "key_id": k, "position": i} for i, k in enumerate(key_ids)],
        )
    db.session.commit()
    return bundle_ids


def _median_seconds(runs: int, *calls: Callable[[], object]) -> list[float]:
    """Median wall time of each call, run interleaved `runs` times (after one warm-up)."""
    times: list[list[float]] = [[] for _ in calls]
    for round_ in range(runs + 1):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            call()
            if round_:
                times[index].append(time.perf_counter() - started)
    return [statistics.median(series) for series in times]


def big_bundle(settings: Settings, runs: int) -> tuple[float, float, float]:
    """(service, primitives, database read) median seconds for a 1,000-key approval."""
    app = create_service_app(settings)
    with app.app_context():
        add_member(USER, BIG_TENANT)
        (bundle_id,) = _bulk_bundles(BIG_TENANT, 1, BIG_KEYS)
        stored = [
            (key.id, key.name, key.value)
            for key in db.session.query(Key).filter_by(tenant_id=BIG_TENANT)
        ]
        names = [name for _, name, _ in stored]
        runtime = current()
        approved = []  # approved pending requests, made ahead: only the task's work is timed
        for _ in range(runs + 1):
            public_key = encode_public_key(generate_keypair())
            request, _ = stored_request(runtime.redis, tenant_id=BIG_TENANT, cli_pub=public_key)
            mac = record_approval(runtime.redis, request, USER, bundle_id, names)
            approved.append((request.id, mac))

        def service() -> None:
            db.session.expire_all()  # the worker reads fresh rows, as after another process
            request_id, mac = approved.pop()
            assert delivery.encrypt_from_bundle(request_id, mac)

        def primitives() -> None:
            values = {
                name: runtime.keyring.decrypt(value, tenant_id=BIG_TENANT, key_id=key_id)
                for key_id, name, value in stored
            }
            seal_values(encode_public_key(generate_keypair()), values)

        def read() -> None:
            db.session.expire_all()
            delivery.select_keys(BIG_TENANT, bundle_id, names)

        service_time, primitive_time, read_time = _median_seconds(runs, service, primitives, read)
    return service_time, primitive_time, read_time


def _median_get(client: httpx.Client, path: str, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def many_bundles(
    settings: Settings, directory: Path, bundles: int, calls: int
) -> tuple[float, float]:
    """(list, healthz) median seconds on the api under gunicorn, `bundles` x 100 keys seeded."""
    app = create_service_app(settings)
    with app.app_context():
        add_member(USER, LIST_TENANT)
        _bulk_bundles(LIST_TENANT, bundles, 100)
    port = free_port()
    secret = settings.bff_shared_secret.get_secret_value()
    with processes(directory / "logs") as procs:
        api = procs.start_web("api", port, server_environment(settings), name="api")
        wait_until_healthy(api)
        with (
            signed_client(api, secret, Signer(USER, LIST_TENANT)) as signed,
            httpx.Client(base_url=api, timeout=30) as plain,
        ):
            listing = signed.get("/api/v1/bundles").json()["bundles"]
            assert len(listing) == bundles and listing[0]["key_count"] == 100
            list_times, health_times = [], []
            for _ in range(calls):  # interleaved: machine noise hits both alike
                list_times.append(_median_get(signed, "/api/v1/bundles", 1))
                health_times.append(_median_get(plain, "/healthz", 1))
    return statistics.median(list_times), statistics.median(health_times)


@contextmanager
def _environment(directory: Path, postgres: bool) -> Iterator[Settings]:
    server = RedisServer(port=free_port(), directory=directory / "redis")
    server.start()
    try:
        with contextlib.ExitStack() as stack:
            database_url = (
                stack.enter_context(temporary_postgres())
                if postgres
                else f"sqlite:///{directory / 'envcat.db'}"
            )
            yield _migrated(database_url, server)
    finally:
        server.stop()


def _migrated(database_url: str, server: RedisServer) -> Settings:
    settings = make_settings(
        database_url, f"{server.url}/0", f"{server.url}/1", log_level="WARNING"
    )
    migrate.upgrade(settings.database_url)
    return settings


def main() -> int:
    """Print both measurements with their baselines and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="repetitions of (1) (default 9)")
    parser.add_argument("--calls", type=int, default=40, help="calls of each in (2) (default 40)")
    parser.add_argument("--bundles", type=int, default=1000, help="bundles in (2) (default 1000)")
    parser.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database")
    parser.add_argument("--check", action="store_true", help="exit 1 when (1) is above 1.5x")
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as name,
        _environment(Path(name), options.postgres) as settings,
    ):
        service, primitives, read = big_bundle(settings, options.runs)
        listing, health = many_bundles(settings, Path(name), options.bundles, options.calls)
    ratio = service / primitives
    print(f"database: {'PostgreSQL' if options.postgres else 'SQLite'}")
    print(f"1. encrypt-from-bundle with {BIG_KEYS} keys (median of {options.runs}):")
    print(f"   service    {service * 1000:8.1f} ms")
    print(f"   primitives {primitives * 1000:8.1f} ms (decrypt x {BIG_KEYS} + one seal)")
    print(f"   ratio      {ratio:8.2f} x (target <= {TARGET} x)")
    print(f"   of the service time, reading the 1000 rows (select_keys): {read * 1000:.1f} ms")
    print(f"2. {options.bundles} bundles x 100 keys (median of {options.calls} calls each):")
    print(f"   GET /api/v1/bundles (signed) {listing * 1000:8.1f} ms")
    print(f"   GET /healthz                 {health * 1000:8.1f} ms")
    print(f"   ratio                        {listing / health:8.1f} x")
    return 1 if options.check and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
