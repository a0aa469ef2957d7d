"""The single app gunicorn imports.

Serve it with gevent workers so long polls do not hold a worker each:
`gunicorn -k gevent -w 2 --worker-connections 2000 -b 0.0.0.0:8888 envcat.bff.wsgi:app`.
"""

from envcat.bff import create_app
from envcat.core.logging import configure_logging
from envcat.core.settings import load_settings

settings = load_settings(needs_kms_key=False)
configure_logging("bff", settings.log_level)
app = create_app(settings)
