"""The scale-out proof (issue #7) with figures, on a Redis broker and on RabbitMQ.

Two api and two bff processes (gunicorn, gevent), two `-Q approvals` workers and
one `-Q provisioning,maintenance` worker, one private redis-server and one fresh
PostgreSQL database (dropped afterwards). N requests are created through
alternating bffs and awaited through both bffs at once; N approvals are fired
together through alternating bffs. Then: was every request delivered to exactly
one of its two waiters (the other told 410), did each approval task run once, how
were the tasks shared between the two approvals workers, and did a maintenance
task land on the third worker alone. The RabbitMQ run uses a virtual host made
for it (`rabbitmqctl add_vhost`) and deleted after, on 127.0.0.1:5672.

    python bench/scaleout.py [--approvals 60] [--broker redis|rabbitmq|both]

Exits 1 when a run is not exactly-once or the routing is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hardening.databases import temporary_postgres
from tests.hardening.scaleout import Result, cluster, drive, rabbitmq_vhost


def run(broker: str, approvals: int) -> Result:
    """One scale-out run on a fresh database and the given broker."""
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        database_url = stack.enter_context(temporary_postgres())
        broker_url = stack.enter_context(rabbitmq_vhost()) if broker == "rabbitmq" else None
        target = stack.enter_context(cluster(directory, database_url, broker_url))
        return drive(target, approvals, broker)


def show(result: Result) -> None:
    """Print one run's figures."""
    print(f"broker {result.broker}: {result.approvals} concurrent approvals")
    print(f"  delivered exactly once: {result.delivered_once}/{result.approvals}")
    print(f"  first approval to last delivery: {result.seconds:.2f} s")
    print(f"  approval tasks per worker: {result.tasks_per_worker}")
    print(f"  maintenance (sweep) task per worker: {result.sweeps_per_worker}")
    for problem in result.problems[:10]:
        print(f"  problem: {problem}")
    print(f"  {'OK' if result.ok else 'FAILED'}")


def main() -> int:
    """Run the chosen brokers; exit 1 unless every run is exactly-once and well routed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approvals", type=int, default=60, help="N (default 60)")
    parser.add_argument("--broker", choices=["redis", "rabbitmq", "both"], default="both")
    options = parser.parse_args()
    brokers = ["redis", "rabbitmq"] if options.broker == "both" else [options.broker]
    results = [run(broker, options.approvals) for broker in brokers]
    for result in results:
        show(result)
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
