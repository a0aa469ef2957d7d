"""The single app gunicorn imports: `gunicorn envcat.api.wsgi:app`.

A bad setting exits with code 3 after one line, so gunicorn halts instead of
re-forking the worker forever (see envcat/core/serving.py).
"""

from envcat.core.serving import load_or_halt

# Settings first: a bad one halts the server before the slow imports of the app.
settings = load_or_halt(needs_kms_key=True)

from envcat.api import create_app  # noqa: E402
from envcat.core.logging import configure_logging  # noqa: E402

configure_logging("api", settings.log_level)
app = create_app(settings)
