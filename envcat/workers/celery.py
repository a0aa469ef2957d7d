"""The module-level Celery app found by `celery -A envcat.workers`.

A bad setting stops `celery worker` and `celery beat` with one line (ConfigError).
Only `celery worker` signs deliveries, so only it requires DELIVERY_SIGNING_KEY,
checked as it starts rather than at the first approval.
"""

from typing import Any

from celery import signals

from envcat.core.settings import load_settings
from envcat.workers.factory import create_celery

settings = load_settings()
app = create_celery(settings)


@signals.celeryd_init.connect
def _require_signing_key(**_: Any) -> None:
    settings.signing_keyring()
