"""The single app gunicorn imports: `gunicorn envcat.api.wsgi:app`."""

from envcat.api import create_app
from envcat.core.logging import configure_logging
from envcat.core.settings import load_settings

settings = load_settings()
configure_logging("api", settings.log_level)
app = create_app(settings)
