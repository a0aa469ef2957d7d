"""Page ids never change the api path the bff signs (issue #12, finding 4).

Every id the pages put into an api path goes through `backend.api_path`: it must
match the id pattern and is quoted, so `%3F`, `%2F`, `%23` or `..` in a link can
neither add a query (`?reveal=true`) nor reach another endpoint.
"""

from __future__ import annotations

import pytest

from envcat.bff.backend import UpstreamError, api_path
from tests.support.bff import Browser

pytestmark = pytest.mark.slow

CANARY = "canary-value-7f3a9c"
TRICKS = ["%3Freveal=true", "%3Freveal%3Dtrue", "%2F..%2F", "%23x", "%2Fx", "%3F"]


def _secret_key(ada: Browser) -> str:
    ada.post("/keys", {"name": "PATH_KEY", "value": CANARY, "is_secret": "on"})
    keys = ada.get("/api/v1/keys").json()["keys"]
    return str(next(k["id"] for k in keys if k["name"] == "PATH_KEY"))


def _reveals(ada: Browser) -> list[object]:
    events = ada.get("/api/v1/audit", params={"action": "key.revealed"}).json()["events"]
    return [e for e in events if e["action"] == "key.revealed"]


@pytest.mark.parametrize("trick", TRICKS)
def test_a_link_with_an_encoded_query_reveals_nothing(ada: Browser, trick: str) -> None:
    key_id = _secret_key(ada)
    page = ada.get(f"/keys/{key_id}{trick}")
    assert page.status_code == 404
    assert CANARY not in page.text
    posted = ada.post(f"/keys/{key_id}{trick}/reveal")
    assert posted.status_code == 404
    assert CANARY not in posted.text
    assert _reveals(ada) == []
    # The same key still works through a clean link, and that reveal is audited.
    ticket = ada.post(f"/keys/{key_id}/reveal")  # post/redirect/get
    assert CANARY in ada.get(ticket.headers["Location"]).text
    assert len(_reveals(ada)) == 1


@pytest.mark.parametrize("bad_id", ["%2E%2E", "..%2F..%2Fkeys", "%2Fapi%2Fv1%2Fkeys"])
def test_dot_and_slash_ids_reach_no_other_endpoint(ada: Browser, bad_id: str) -> None:
    assert ada.get(f"/bundles/{bad_id}").status_code == 404
    assert ada.post(f"/bundles/{bad_id}/delete").status_code == 404
    assert ada.post(f"/keys/{bad_id}/delete").status_code == 404
    assert ada.post(f"/keys/{bad_id}/edit", {"name": "X"}).status_code == 404


def test_api_path_quotes_and_checks_every_id() -> None:
    path = api_path("/api/v1/bundles/{b}/keys/{k}", b="abc-1", k="d_2")
    assert path == "/api/v1/bundles/abc-1/keys/d_2"
    for bad in ["x?reveal=true", "a/b", "x#y", "..", ".", "", "a%3Fb", "a b", "é"]:
        with pytest.raises(UpstreamError) as raised:
            api_path("/api/v1/keys/{k}", k=bad)
        assert raised.value.status == 404
    with pytest.raises(ValueError, match="needs exactly"):
        api_path("/api/v1/keys/{k}", other="x")
