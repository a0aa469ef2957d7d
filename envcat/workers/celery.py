"""The module-level Celery app found by `celery -A envcat.workers`."""

from envcat.core.settings import load_settings
from envcat.workers.factory import create_celery

app = create_celery(load_settings())
