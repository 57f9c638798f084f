"""What the desk queues in the outbox: the kinds of message, their targets and builders.

Plain data only (no Slack, no Rasa imports), so the follow-up actions can queue a note
for a case's thread in the same transaction as the change they make.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.cases.store import OutboxMessage

if TYPE_CHECKING:
    from bot.cases import Case

# --- names shared with the domain (domain/followup.yml) --------------------------------
INTENT_CASE_RESOLVED = "EXTERNAL_case_resolved"
INTENT_RATE = "rate"
ENTITY_RATING = "rating"
ACTION_FOLLOWUP = "action_followup"
ACTION_FOLLOWUP_SOLVED = "action_followup_solved"
ACTION_FOLLOWUP_UNSOLVED = "action_followup_unsolved"
ACTION_FOLLOWUP_RATING = "action_followup_rating"

# --- kinds: what the worker does with a message ---------------------------------------
KIND_CARD_POST = "card.post"  # post the case card to its routed channel
KIND_CARD_UPDATE = "card.update"  # re-render the card in place (chat.update)
KIND_THREAD = "thread.post"  # a message in the card's thread
KIND_EPHEMERAL = "slack.ephemeral"  # a message only one Slack user sees
KIND_CUSTOMER = "customer.send"  # an agent's reply, to the customer's own channel
KIND_RASA_EVENTS = "rasa.events"  # events appended to the Rasa tracker (resume, bot)
KIND_RASA_TRIGGER = "rasa.trigger"  # an intent triggered in the conversation (follow-up)
SLACK_KINDS: frozenset[str] = frozenset({KIND_CARD_POST, KIND_CARD_UPDATE, KIND_THREAD, KIND_EPHEMERAL})

# --- notices: thread messages whose wording the desk renders -----------------------------
NOTICE_CLAIMED = "claimed"
NOTICE_REASSIGNED = "reassigned"
NOTICE_RESOLVED = "resolved"
NOTICE_REOPENED = "reopened"
NOTICE_SOLVED = "solved"
NOTICE_RATED = "rated"
NOTICE_NOT_PUSHED = "not_pushed"
NOTICE_NOT_DELIVERED = "not_delivered"


def slack_target(case_id: int) -> str:
    """Return the delivery lane of a case's card and thread (one at a time, in order)."""
    return f"slack:case:{case_id}"


def customer_target(channel: str, sender_id: str) -> str:
    """Return the delivery lane of messages to one customer."""
    return f"customer:{channel}:{sender_id}"


def rasa_target(conversation_id: str) -> str:
    """Return the delivery lane of changes to one Rasa conversation."""
    return f"rasa:{conversation_id}"


def card_post(case_id: int) -> OutboxMessage:
    """Post the case's card (once per case: the key is the case)."""
    return OutboxMessage(f"card-post:{case_id}", KIND_CARD_POST, slack_target(case_id), {}, case_id)


def card_update(case_id: int, digest: str, now: datetime) -> OutboxMessage:
    """Bring the card in Slack up to date (it is rendered afresh when delivered)."""
    key = f"card-update:{case_id}:{digest}:{now.isoformat()}"
    return OutboxMessage(key, KIND_CARD_UPDATE, slack_target(case_id), {"digest": digest}, case_id)


def thread_message(case_id: int, key: str, text: str, *, broadcast: bool = False) -> OutboxMessage:
    """Post ``text`` (Slack mrkdwn, already escaped) in the card's thread."""
    return OutboxMessage(key, KIND_THREAD, slack_target(case_id), {"text": text, "broadcast": broadcast}, case_id)


def thread_notice(case_id: int, key: str, notice: str, **details: Any) -> OutboxMessage:
    """Post a notice (``NOTICE_*``, worded by the desk) in the card's thread."""
    return OutboxMessage(key, KIND_THREAD, slack_target(case_id), {"notice": notice, **details}, case_id)


def ephemeral(key: str, channel: str, user: str, text: str, thread_ts: str | None = None) -> OutboxMessage:
    """Show ``text`` to ``user`` alone, in ``channel`` (and thread)."""
    payload = {"channel": channel, "user": user, "text": text, "thread_ts": thread_ts}
    return OutboxMessage(key, KIND_EPHEMERAL, f"slack:ephemeral:{key}", payload, None)


def customer_reply(case: Case, key: str, text: str, agent: str) -> OutboxMessage:
    """Send an agent's reply to the customer of ``case`` through their own channel."""
    payload = {"channel": case.channel, "sender_id": case.sender_id, "text": text, "agent": agent}
    return OutboxMessage(key, KIND_CUSTOMER, customer_target(case.channel, case.sender_id), payload, case.id)


def rasa_events(case: Case, key: str, events: list[dict[str, Any]]) -> OutboxMessage:
    """Append ``events`` to the Rasa conversation of ``case``."""
    payload = {"conversation_id": case.sender_id, "events": events}
    return OutboxMessage(key, KIND_RASA_EVENTS, rasa_target(case.sender_id), payload, case.id)


def rasa_trigger(case: Case, key: str, intent: str) -> OutboxMessage:
    """Trigger ``intent`` in the Rasa conversation of ``case`` (the bot answers on the customer's channel)."""
    payload = {"conversation_id": case.sender_id, "intent": intent}
    return OutboxMessage(key, KIND_RASA_TRIGGER, rasa_target(case.sender_id), payload, case.id)


def followup_notice(case: Case, notice: str, **details: Any) -> OutboxMessage:
    """A notice about the customer's follow-up answers, once per resolution of the case."""
    key = f"followup:{case.id}:{case.reopened_count}:{notice}"
    return thread_notice(case.id, key, notice, **details)
