"""The turn leases' heartbeat: one UPDATE per lease length, and the streamed text so far.

agentd.turn.liveturns decides which turns are due; this writes it.
"""
from __future__ import annotations

import datetime as dt

from agentd.store.models import Conversation, db, utcnow
from agentd.store.recorder import save_checkpoints


def renew_leases(groups: dict[int, list[str]], checkpoints: list[tuple[int, str]] = ()) -> None:
    """Push out the leases named by their tokens (one UPDATE per lease length), save text so far."""
    with db.connection_context():
        for lease, tokens in groups.items():
            (Conversation.update(busy_until=utcnow() + dt.timedelta(seconds=lease))
             .where(Conversation.busy_token.in_(tokens)).execute())
        if checkpoints:
            save_checkpoints(checkpoints)
