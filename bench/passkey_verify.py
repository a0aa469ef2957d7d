"""What checking one passkey approval (ES256) adds to `envcat get`, beside `envcat --version`.

Measured in the same run, interleaved so machine noise hits each alike:

- `envcat --version`: the bare start-up of the CLI (the floor of every `get`);
- the import the check adds: in a fresh interpreter that has imported what `get`
  already imports (httpx, PyNaCl, the CLI), the time `import envcat.core.passkeys`
  (cryptography's ES256/Ed25519 code) takes, timed inside that interpreter (a
  difference of whole start-ups drowns in the noise of a shared machine);
- the check itself, in process: parse the listed COSE key, rebuild the statement,
  verify clientDataJSON, authenticator data and the ES256 signature
  (`envcat.cli.approvers.check_passkey_approval`), median of many runs.

    python bench/passkey_verify.py [--runs 30] [--checks 2000]

Issue #20's target: at most 5% added to a `get`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

BASE_IMPORTS = "import httpx, nacl.public, envcat.cli.main, envcat.cli.verify"


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


_TIMED_IMPORT = (
    "import time\nt0 = time.perf_counter()\n"
    + BASE_IMPORTS
    + "\nt = time.perf_counter()\nimport envcat.core.passkeys\n"
    + "print(t - t0, time.perf_counter() - t)"
)


def startup_and_import(runs: int) -> tuple[float, float, float]:
    """Medians of `envcat --version`, of what `get` imports on top, and of the checker's import."""
    envcat = [str(Path(sys.executable).with_name("envcat")), "--version"]
    timed = [sys.executable, "-c", _TIMED_IMPORT]
    _wall(envcat)  # warm the page cache and the bytecode
    subprocess.run(timed, check=True, capture_output=True)
    starts: list[float] = []
    get_imports: list[float] = []
    imports: list[float] = []
    for _ in range(runs):
        starts.append(_wall(envcat))
        done = subprocess.run(timed, check=True, capture_output=True, text=True)
        base, checker = (float(part) for part in done.stdout.split())
        get_imports.append(base)
        imports.append(checker)
    return (
        statistics.median(starts),
        statistics.median(get_imports),
        statistics.median(imports),
    )


def one_check(checks: int) -> float:
    """Median seconds of one in-process check of an ES256 assertion."""
    import base64

    from envcat.cli.approvers import check_passkey_approval
    from envcat.cli.config import TrustedApprover
    from envcat.core.approval_statement import ApprovalStatement
    from envcat.core.envelope import Envelope
    from envcat.core.usercode import user_code
    from tests.support.passkeys import SoftPasskey

    server, pub = "https://envcat.example.com", base64.b64encode(b"k" * 32).decode()
    keys = {f"KEY_{n}": "v" for n in range(10)}
    statement = ApprovalStatement.of(
        request_id="r" * 22,
        cli_public_key=pub,
        workspace="acme",
        bundle_id="b" * 36,
        keys=keys,
        user_code=user_code("r" * 22, pub),
        decided_at=int(time.time()),
    )
    key = SoftPasskey.es256()
    proof = key.sign(statement, origin=server, rp_id="envcat.example.com")
    envelope = Envelope(
        "r" * 22,
        pub,
        "t",
        "acme",
        "b" * 36,
        "prod/api",
        "u",
        "a@b.c",
        1.0,
        keys,
        passkey=proof.as_dict(),
    )
    approvers = [TrustedApprover(**key.approver())]
    samples = []
    for _ in range(checks):
        started = time.perf_counter()
        check_passkey_approval(
            envelope,
            request_id="r" * 22,
            cli_public_key=pub,
            workspace="acme",
            server=server,
            approvers=approvers,
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    """Print each figure beside `envcat --version` and the share it adds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="start-ups of each (default 30)")
    parser.add_argument("--checks", type=int, default=2000, help="in-process checks (default 2000)")
    options = parser.parse_args()
    envcat, get_imports, added_import = startup_and_import(options.runs)
    check = one_check(options.checks)
    total = added_import + check
    print(
        f"envcat --version (baseline)       median {envcat * 1000:8.2f} ms  ({options.runs} runs)"
    )
    print(f"import added by the checker       median {added_import * 1000:8.2f} ms")
    print(
        f"one ES256 passkey check           median {check * 1000:8.3f} ms  ({options.checks} runs)"
    )
    share = f"{total / envcat:.1%} of envcat --version"
    print(f"added to a get                    {total * 1000:8.2f} ms = {share}")
    floor = envcat + get_imports
    print(
        f"  a get's own start-up floor      {floor * 1000:8.2f} ms (envcat --version + "
        f"{get_imports * 1000:.1f} ms of httpx, PyNaCl, CLI imports): "
        f"{total / floor:.1%} of it (target <= 5%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
