"""Two keyrings and seeded values, for KMS key rotation tests (the `apps` fixture is in
tests/services/conftest.py)."""

from __future__ import annotations

from flask import Flask

from envcat.core.keys import new_kms_key
from envcat.models import Key, Tenant, db, new_uuid
from envcat.services.runtime import current

OLD = new_kms_key()
NEW = new_kms_key()


def seed_values(app: Flask, values: dict[str, str], tenant_id: str = "t-a") -> None:
    with app.app_context():
        if db.session.get(Tenant, tenant_id) is None:
            db.session.add(Tenant(id=tenant_id, name=tenant_id, kind="org"))
            db.session.flush()
        for name, value in values.items():
            key_id = new_uuid()
            stored = current().keyring.encrypt(value, tenant_id=tenant_id, key_id=key_id)
            db.session.add(Key(id=key_id, tenant_id=tenant_id, name=name, value=stored))
        db.session.commit()
