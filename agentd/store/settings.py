"""Values every process serving one database must agree on."""
from __future__ import annotations

import secrets

from agentd.store.models import AppSetting


def shared_secret(name: str) -> str:
    """A random secret created once per database; every process reads the same one.

    Widget tokens signed by one gunicorn worker must verify in another and after a
    restart, even when the operator set no AGENTD_SECRET_KEY.
    """
    AppSetting.insert(key=name, value=secrets.token_hex(32)).on_conflict_ignore().execute()
    return AppSetting.get_by_id(name).value
