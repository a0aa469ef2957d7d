"""OIDC workload deliveries (issue #16): token -> opened envelope, beside the bare floors.

Same set-up as `bench/approval_latency.py` (private redis-server, one real worker
process as deployed, the api in-process on SQLite, the bare Celery app of
`bench/baselines.py` on the same Redis), plus a loopback OIDC issuer and an
automatic trust policy. For each of N rounds, interleaved so machine noise hits all
alike:

1. baseline: a bare Celery no-op round trip (`send_task`, LPUSH, BLPOP);
2. baseline: one JWT verification alone (PyJWT, RS256, key already in hand);
3. the figure: a fresh GitHub-shaped ID token is POSTed with the request, the api
   verifies it (JWKS cached after the warm-up) and approves by policy, the worker
   seals and signs, the long poll answers, and the envelope is opened and its
   signature checked: from the POST to the opened envelope;
4. extra line: the human path's server time (approve 202 -> long-poll answer), as in
   `approval_latency.py`.

Target: p50 of (3) <= 2 x (p50 of 1 + p50 of 2). Deliveries/s is sequential (one
client, a solo worker): 1 / mean of (3).

    python bench/oidc.py [--n 100] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jwt

from envcat.api import create_app
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import WorkloadPolicy, db, migrate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from approval_latency import BUNDLE_KEYS, TENANT, USER, Bench, _settings, _worker
from baselines import bare_celery

from tests.support import RedisServer, free_port
from tests.support.api import seed_bundle
from tests.support.envelopes import open_delivery
from tests.support.signed import add_member
from tests.workloads.issuer import AUDIENCE, LoopbackIssuer

TARGET_RATIO = 2.0
WARMUP = 5


class OidcBench(Bench):
    """Adds the OIDC round to the approval bench's clients."""

    issuer: LoopbackIssuer

    def jwt_verification(self) -> float:
        """Seconds PyJWT takes to verify one RS256 token with the key in hand."""
        token = self.issuer.mint()
        key = self.issuer.rsa_key.public_key()
        started = time.perf_counter()
        jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=self.issuer.url)
        return time.perf_counter() - started

    def oidc_delivery(self) -> float:
        """Seconds from POSTing a request with an ID token to holding the opened values."""
        private_key = generate_keypair()
        token = self.issuer.mint()
        body = {
            "client_pubkey": encode_public_key(private_key),
            "workspace": TENANT,
            "bundle": "bench/api",
            "id_token": token,
        }
        started = time.perf_counter()
        created = self.client.post("/api/v1/requests", json=body)
        if created.status_code != 201 or created.get_json()["workload_mode"] != "automatic":
            raise RuntimeError(f"not approved by policy: {created.get_json()}")
        data = created.get_json()
        reply = self.client.get(
            f"/api/v1/requests/{data['id']}/wait?timeout=25",
            headers={"X-Poll-Token": data["poll_token"]},
        ).get_json()
        if reply.get("status") != "ready":
            raise RuntimeError(f"the long poll ended with {reply}")
        values = open_delivery(private_key, reply["ciphertext_base64"])
        elapsed = time.perf_counter() - started
        if len(values) != len(BUNDLE_KEYS):
            raise RuntimeError("the envelope does not hold the bundle's keys")
        return elapsed


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def run(n: int) -> dict[str, list[float]]:
    """Every series, n samples each."""
    issuer = LoopbackIssuer().start()
    with tempfile.TemporaryDirectory(prefix="envcat-bench-") as tmp:
        directory = Path(tmp)
        server = RedisServer(port=free_port(), directory=directory / "redis")
        server.start()
        try:
            settings = _settings(directory, server.url).model_copy(update={"oidc_allow_http": True})
            migrate.upgrade(settings.database_url)
            app = create_app(settings)
            with app.app_context():
                add_member(USER, TENANT)
                bundle_id = seed_bundle(TENANT, "bench/api", BUNDLE_KEYS)
                db.session.add(
                    WorkloadPolicy(
                        tenant_id=TENANT,
                        name="bench",
                        issuer=issuer.url,
                        audience=AUDIENCE,
                        rules=[{"claim": "repository", "op": "eq", "value": "acme/api"}],
                        bundle_id=bundle_id,
                        keys=[],
                        mode="automatic",
                    )
                )
                db.session.commit()
                with (
                    _worker(settings, directory / "worker.log"),
                    bare_celery(server.url, directory) as bare,
                ):
                    bench = OidcBench(app, settings, bundle_id, bare)
                    bench.issuer = issuer
                    bench.ping_round_trip()  # waits for the worker to be up
                    for _ in range(WARMUP):
                        bare.round_trip()
                        bench.oidc_delivery()
                        bench.approval_latency()
                    series: dict[str, list[float]] = {
                        "oidc": [],
                        "bare": [],
                        "jwt": [],
                        "human": [],
                    }
                    for _ in range(n):
                        series["bare"].append(bare.round_trip())
                        series["jwt"].append(bench.jwt_verification())
                        series["oidc"].append(bench.oidc_delivery())
                        series["human"].append(bench.approval_latency())
            return series
        finally:
            server.stop()
            issuer.stop()


def main() -> int:
    """Print each figure beside its baselines; with --check, fail above the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="rounds to time (default 100)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {TARGET_RATIO}x")
    options = parser.parse_args()
    series = run(options.n)
    rows = [
        ("OIDC token -> opened envelope", series["oidc"]),
        ("bare Celery no-op round trip (baseline)", series["bare"]),
        ("one JWT verification, RS256 (baseline)", series["jwt"]),
        ("human path: approve 202 -> answer (extra)", series["human"]),
    ]
    print(f"rounds: {options.n} (5-key bundle, one client, solo worker)")
    for label, samples in rows:
        print(f"{label:42} p50 {_p50(samples) * 1000:7.2f} ms   p99 {_p99(samples) * 1000:7.2f} ms")
    floor = _p50(series["bare"]) + _p50(series["jwt"])
    ratio = _p50(series["oidc"]) / floor
    print(
        f"{'OIDC deliveries per second (sequential)':42} {1 / statistics.mean(series['oidc']):.1f}"
    )
    print(f"{'ratio p50 / (bare + JWT) p50':42} {ratio:.2f}  (target <= {TARGET_RATIO})")
    return 1 if options.check and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
