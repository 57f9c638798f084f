"""What the desk queues in the outbox: the kinds of message, their targets and builders.

Plain data only (no Slack, no Rasa imports), so the follow-up actions can queue a note
for a case's thread in the same transaction as the change they make.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.cases.records import OutboxMessage

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

# Tracker events that give a paused conversation back to the bot: the hand-off paused it
# right after its action, so it never listened; resume, and listen.
RESUME_EVENTS: tuple[dict[str, Any], ...] = ({"event": "resume"}, {"event": "action", "name": "action_listen"})

# --- kinds: what the worker does with a message ---------------------------------------
KIND_CARD_POST = "card.post"  # post the case card to its routed channel
KIND_CARD_UPDATE = "card.update"  # re-render the card in place (chat.update)
KIND_THREAD = "thread.post"  # a message in the card's thread
KIND_EPHEMERAL = "slack.ephemeral"  # a message only one Slack user sees
KIND_CUSTOMER = "customer.send"  # an agent's reply, to the customer's own channel
KIND_RASA_EVENTS = "rasa.events"  # events appended to the Rasa tracker (resume, bot)
KIND_RASA_TRIGGER = "rasa.trigger"  # an intent triggered in the conversation (follow-up)
KIND_LEAD_POST = "slack.lead_post"  # the watchdog's escalation, in the leads' channel
KIND_LEAD_NOTICE = "slack.lead_notice"  # a message in the leads' channel (a customer the watchdog could not reach)
SLACK_KINDS: frozenset[str] = frozenset(
    {KIND_CARD_POST, KIND_CARD_UPDATE, KIND_THREAD, KIND_EPHEMERAL, KIND_LEAD_POST, KIND_LEAD_NOTICE}
)

# --- idempotency-key prefixes other parts of the desk look for ---------------------------
# Every customer message relayed to a case's thread (``bot.desk.relay``): when the customer last wrote.
RELAY_IN_PREFIX = "relay-in:"
# The watchdog's messages to customers, by what they are.
PROMISE_UPDATE_PREFIX = "promise-update:"
CHECKIN_PREFIX = "checkin:"
CLOSE_PREFIX = "close:"
ESCALATION_PREFIX = "escalation:"
# The watchdog could not send a new estimate: the customer's platform window is closed.
UNREACHABLE_PREFIX = "unreachable:"

# --- notices: thread messages whose wording the desk renders -----------------------------
NOTICE_CLAIMED = "claimed"
NOTICE_REASSIGNED = "reassigned"
NOTICE_RESOLVED = "resolved"
NOTICE_REOPENED = "reopened"
NOTICE_SOLVED = "solved"
NOTICE_RATED = "rated"
NOTICE_NOT_PUSHED = "not_pushed"
NOTICE_NOT_DELIVERED = "not_delivered"
NOTICE_ESCALATED = "escalated"
NOTICE_PROMISE_UPDATED = "promise_updated"
NOTICE_CHECKIN = "checkin"
NOTICE_CLOSED = "closed"
NOTICE_LATE_PICKUP = "late_pickup"


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


def relay_in_key(row_id: int) -> str:
    """Return the key of a customer message (Rasa event row ``row_id``) relayed to its case's thread."""
    return f"{RELAY_IN_PREFIX}{row_id}"


def customer_reply(case: Case, key: str, text: str, agent: str) -> OutboxMessage:
    """Send an agent's reply to the customer of ``case`` through their own channel."""
    payload = {"channel": case.channel, "sender_id": case.sender_id, "text": text, "agent": agent}
    return OutboxMessage(key, KIND_CUSTOMER, customer_target(case.channel, case.sender_id), payload, case.id)


def assistant_message(case: Case, key: str, text: str, what: str) -> OutboxMessage:
    """Send the assistant's own message (``what``: a promise update, a check-in) to the customer of ``case``.

    Delivered like an agent's reply (their channel, then a ``bot`` event in the tracker),
    but it is no person's reply: the case's first human reply is not set by it.
    """
    payload = {"channel": case.channel, "sender_id": case.sender_id, "text": text, "agent": None, "watchdog": what}
    return OutboxMessage(key, KIND_CUSTOMER, customer_target(case.channel, case.sender_id), payload, case.id)


def reopen_template(case: Case, key: str, agent: str) -> OutboxMessage:
    """Send the WhatsApp template of support.yml that invites the customer of ``case`` back (an agent's ``template:``)."""
    payload = {"channel": case.channel, "sender_id": case.sender_id, "template": True, "agent": agent}
    return OutboxMessage(key, KIND_CUSTOMER, customer_target(case.channel, case.sender_id), payload, case.id)


def lead_notice(case_id: int, key: str, channel: str, text: str) -> OutboxMessage:
    """Post ``text`` (Slack mrkdwn, already escaped) in the leads' ``channel``, in the case's lane."""
    return OutboxMessage(key, KIND_LEAD_NOTICE, slack_target(case_id), {"channel": channel, "text": text}, case_id)


def lead_post(case: Case, key: str, channel: str, **details: Any) -> OutboxMessage:
    """Post the escalation of ``case`` to the leads' ``channel`` (worded by the desk when delivered).

    In the case's lane, so it goes after the card it points to.
    """
    return OutboxMessage(key, KIND_LEAD_POST, slack_target(case.id), {"channel": channel, **details}, case.id)


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
