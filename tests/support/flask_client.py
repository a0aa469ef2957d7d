"""A Flask test client that closes each reply, as a WSGI server does (issue #14).

The api runs some bookkeeping once a reply is closed (`api.context.after_response`,
e.g. a delivery's audit append after the CLI has its answer). Gunicorn and
Werkzeug's server close every reply; Werkzeug's test client leaves that to the
caller, so tests would not see that work. This client reads the body and closes
the reply before handing it over (neither app streams a reply).
"""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse


class ClosingClient(FlaskClient):
    """`app.test_client()` for tests: every reply is read and closed."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        response.make_sequence()
        response.close()
        return response
