"""The web chat's messages: every displayed message of every conversation, in order.

The table ``webchat_messages`` in the channel database (``$FIRSTREPLY_CHANNEL_DB``, default
``var/channels.db``, shared with the other connectors' dedupe and inbox). A customer
message is claimed once per browser id (``client_id``), so a retry after a lost answer
reaches Rasa once and gets the same answer again; the bot's messages are kept with the
message they answer, or alone when sent later (reminders, agents' replies). A claimed
message names the process answering it (``bot.channels.leases.process_owner``), so a retry
can take over at once a message whose process is known to be gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy import text as sql
from sqlalchemy.exc import OperationalError, ProgrammingError

from bot.channels.dedupe import UPSERTS, channel_engine, create_tables, url_from_env

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, Row

HISTORY_LIMIT = 500
# An answer still missing this long after its message was taken is presumed lost (the
# process handling it died); a retry of the message then goes to Rasa again.
STALE_CLAIM_SECONDS = 120

CUSTOMER = "customer"
BOT = "bot"
# Why an unanswered message was taken over: the process answering it is gone, or it is too old.
ABANDONED = "its process is gone"
STALE = f"unanswered for {STALE_CLAIM_SECONDS} s"

metadata = MetaData()

# Declared like the case store's tables (bot/cases/schema.py) and the inbox's: the likeness
# is SQLAlchemy's Column(name, type, nullable=...) syntax, not logic a helper could share.
webchat_messages = Table(
    "webchat_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender", String(128), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("buttons", Text, nullable=True),  # JSON list, bot messages only
    # Customer messages: the browser's id for the message, and when the answer was stored.
    Column("client_id", String(64), nullable=True),
    Column("answered_at", BigInteger, nullable=True),
    # Customer messages: the process answering it (``process_owner``), until it is answered.
    Column("owner", String(64), nullable=True),
    # Bot messages: the customer message they answer (None: sent on the bot's own initiative).
    Column("reply_to", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("sender", "client_id", name="uq_webchat_messages_client_id"),
)


# --- what is displayed ---------------------------------------------------------------


def displayed(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """Turn one message of Rasa's ``CollectingOutputChannel`` into what the page shows.

    Returns ``{"text", "buttons"}`` (buttons with a title and a payload or a URL), or ``None``
    when there is nothing to show.
    """
    custom = message.get("custom") if isinstance(message.get("custom"), dict) else {}
    lines = [
        str(value)
        for value in (message.get("text") or custom.get("text"), message.get("image"), message.get("attachment"))
        if value
    ]
    buttons = []
    for button in message.get("buttons") or custom.get("buttons") or []:
        if not isinstance(button, dict):
            continue
        title = str(button.get("title") or button.get("payload") or "").strip()
        if button.get("url"):
            # Shown as a link: only web addresses, never ``javascript:`` and the like.
            if title and urlsplit(str(button["url"])).scheme in ("http", "https"):
                buttons.append({"title": title, "url": str(button["url"])})
        elif title:
            buttons.append({"title": title, "payload": str(button.get("payload") or title)})
    if not lines and not buttons:
        return None
    return {"text": "\n".join(lines), "buttons": buttons}


# --- the message table ---------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """The customer row of one message: just taken (``new``), or taken before."""

    id: int
    new: bool
    text: str  # as stored: the first copy's
    replies: list[dict[str, Any]] | None  # None: not answered yet
    # Taken over from an answer that was never stored, and why (``ABANDONED`` or ``STALE``):
    # Rasa may have saved the message already. None: not taken over.
    retaken: str | None = None


class WebChatStore:
    """The displayed messages of every web chat conversation, in order.

    Build it with ``WebChatStore.from_url``. Every method is one short transaction and
    blocking; async callers run it in a thread.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        """Wrap an engine whose table exists (use ``from_url``)."""
        self._engine = engine
        self._clock = clock
        self._upsert = UPSERTS[engine.dialect.name]

    @classmethod
    def from_url(cls, url: str | None = None, clock: Callable[[], float] = time.time) -> WebChatStore:
        """Connect to ``url`` (default: ``$FIRSTREPLY_CHANNEL_DB``) and create the table."""
        engine = channel_engine(url or url_from_env())
        create_tables(metadata, engine)
        _add_owner_column(engine)
        return cls(engine, clock)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def claim(
        self, sender: str, client_id: str, text: str, *, owner: str | None = None,
        abandoned: Callable[[str | None], bool] | None = None,
    ) -> Claim:  # fmt: skip
        """Record a customer message once per (sender, client_id), answered by ``owner``; say whether it is new.

        A message taken but never answered is taken again (``Claim.retaken``) when it was
        taken more than ``STALE_CLAIM_SECONDS`` ago, or when ``abandoned(its owner)`` says
        the process answering it is gone. Of two copies racing in two processes exactly one
        gets a new claim: the old row is deleted by id and the new one inserted if absent.
        """
        now = int(self._clock())
        rows = webchat_messages.c
        mine = and_(rows.sender == sender, rows.client_id == client_id)
        statement = (
            self._upsert(webchat_messages)
            .values(sender=sender, role=CUSTOMER, text=text, client_id=client_id, owner=owner, created_at=now)
            .on_conflict_do_nothing(index_elements=["sender", "client_id"])
        )
        with self._engine.begin() as conn:
            before = conn.execute(select(rows.id, rows.answered_at, rows.created_at, rows.owner).where(mine)).first()
            retaken = None
            if before is not None and before.answered_at is None:
                if before.created_at < now - STALE_CLAIM_SECONDS:
                    retaken = STALE
                elif abandoned is not None and abandoned(before.owner):
                    retaken = ABANDONED
            if retaken is not None:
                # By id: of two processes taking it over at once, one deletes it, the other finds it gone.
                gone = delete(webchat_messages).where(rows.id == before.id, rows.answered_at.is_(None))
                if conn.execute(gone).rowcount != 1:
                    retaken = None
            inserted = conn.execute(statement).rowcount == 1
            found = conn.execute(select(rows.id, rows.text, rows.answered_at).where(mine)).one()
            replies = None
            if found.answered_at is not None:
                answer = select(webchat_messages).where(rows.reply_to == found.id).order_by(rows.id)
                replies = [_shown(row, with_buttons=True) for row in conn.execute(answer)]
        return Claim(int(found.id), inserted, str(found.text), replies, retaken if inserted else None)

    def answer(self, sender: str, customer_id: int, replies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store the bot's ``replies`` to a claimed message; return them as displayed."""
        now = int(self._clock())
        rows = webchat_messages.c
        with self._engine.begin() as conn:
            stored = self._insert_bot(conn, sender, replies, customer_id, now)
            conn.execute(update(webchat_messages).where(rows.id == customer_id).values(answered_at=now, owner=None))
        return stored

    def forget(self, customer_id: int) -> None:
        """Remove a claimed message Rasa failed to handle, so a retry goes through again."""
        with self._engine.begin() as conn:
            conn.execute(delete(webchat_messages).where(webchat_messages.c.id == customer_id))

    def greet_first_turn(self, sender: str, customer_id: int, text: str) -> dict[str, Any] | None:
        """Store the greeting ``text`` ahead of the answer to the conversation's first message; return it as displayed.

        Only while ``customer_id`` is the conversation's only customer message and nothing was
        shown to it yet; the same greeting stored before (by an answer a crash cut off, whose
        message is now taken over) is returned, not stored again. ``None``: not the first turn.
        """
        rows = webchat_messages.c
        with self._engine.begin() as conn:
            others = conn.execute(
                select(rows.id, rows.role, rows.text)
                .where(rows.sender == sender, rows.id != customer_id)
                .order_by(rows.id)
            ).all()  # fmt: skip
            if any(row.role == CUSTOMER for row in others) or len(others) > 1:
                return None
            if others:
                before = others[0]
                return {"id": int(before.id), "from": BOT, "text": before.text} if before.text == text else None
            return self._insert_bot(conn, sender, [{"text": text}], customer_id, int(self._clock()))[0]

    def append(self, sender: str, replies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store bot messages sent without a customer message (reminders, agents' replies)."""
        with self._engine.begin() as conn:
            return self._insert_bot(conn, sender, replies, None, int(self._clock()))

    def _insert_bot(
        self, conn: Any, sender: str, replies: Sequence[Mapping[str, Any]], reply_to: int | None, now: int
    ) -> list[dict[str, Any]]:
        stored = []
        for reply in replies:
            values = {"sender": sender, "role": BOT, "text": reply["text"], "reply_to": reply_to, "created_at": now,
                      "buttons": json.dumps(reply["buttons"]) if reply.get("buttons") else None}  # fmt: skip
            new_id = conn.execute(webchat_messages.insert().values(**values)).inserted_primary_key[0]
            stored.append(_shown_values({"id": new_id, **values}, with_buttons=True))
        return stored

    def history(self, sender: str, after: int = 0, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
        """Return the conversation's messages after id ``after`` (the latest ``limit``), oldest first.

        Buttons come only with the bot messages since the customer's last message: older
        ones were answered already.
        """
        rows = webchat_messages.c
        with self._engine.connect() as conn:
            last_customer = self._last_customer_id(conn, sender)
            found = conn.execute(
                select(webchat_messages)
                .where(rows.sender == sender, rows.id > after)
                .order_by(rows.id.desc())
                .limit(limit)
            ).all()
        return [_shown(row, with_buttons=row.id > last_customer) for row in reversed(found)]

    def offered_buttons(self, sender: str) -> list[dict[str, Any]]:
        """Return the buttons the customer can press now (those since their last message)."""
        rows = webchat_messages.c
        with self._engine.connect() as conn:
            last_customer = self._last_customer_id(conn, sender)
            found = conn.execute(
                select(rows.buttons).where(
                    rows.sender == sender, rows.role == BOT, rows.id > last_customer, rows.buttons.is_not(None)
                )
            ).scalars()
            return [button for buttons in found for button in json.loads(buttons)]

    @staticmethod
    def _last_customer_id(conn: Any, sender: str) -> int:
        rows = webchat_messages.c
        found = conn.execute(select(func.max(rows.id)).where(and_(rows.sender == sender, rows.role == CUSTOMER)))
        return int(found.scalar() or 0)


def _add_owner_column(engine: Engine) -> None:
    """Give a table made before claims named their process the ``owner`` column.

    Two processes starting at once may both find it missing: the second's "already
    exists" / "duplicate column" is what the first did.
    """
    if "owner" in {column["name"] for column in inspect(engine).get_columns("webchat_messages")}:
        return
    try:
        with engine.begin() as conn:
            conn.execute(sql("ALTER TABLE webchat_messages ADD COLUMN owner VARCHAR(64)"))
    except (OperationalError, ProgrammingError) as error:
        if "duplicate column" not in str(error) and "already exists" not in str(error):
            raise


def _shown(row: Row, with_buttons: bool) -> dict[str, Any]:
    return _shown_values(dict(row._mapping), with_buttons)


def _shown_values(values: Mapping[str, Any], with_buttons: bool) -> dict[str, Any]:
    """Return a stored message as the page gets it."""
    shown: dict[str, Any] = {"id": int(values["id"]), "from": values["role"], "text": values["text"]}
    if values["role"] == CUSTOMER:
        shown["client_id"] = values["client_id"]
    elif with_buttons and values.get("buttons"):
        shown["buttons"] = json.loads(values["buttons"])
    return shown
