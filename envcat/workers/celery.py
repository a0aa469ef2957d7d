"""The module-level Celery app found by `celery -A envcat.workers`.

A bad setting stops `celery worker` and `celery beat` with one line (ConfigError).
Only `celery worker` signs deliveries, so only it requires DELIVERY_SIGNING_KEY,
checked as it starts rather than at the first approval.
"""

import sys
from typing import Any

from celery import signals

from envcat.core import tracing
from envcat.core.settings import load_settings
from envcat.workers.factory import create_celery

settings = load_settings()
if "worker" in sys.argv[1:]:
    # Before the app is built (seconds of imports): a worker without the key stops at once.
    settings.signing_keyring()
tracing.setup(settings, "worker")  # before the app's database engine is made
app = create_celery(settings)


@signals.celeryd_init.connect
def _require_signing_key(**_: Any) -> None:
    # Any other way of starting a worker (celeryd_init is sent by every worker start).
    settings.signing_keyring()
