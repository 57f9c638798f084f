"""Meta's policy windows, applied to what the desk sends a customer later.

Messenger, Instagram and WhatsApp deliver a message only within a window counted from
the customer's last message (``bot.channels.meta.window_for``): 24 hours for anything;
on Messenger and Instagram a person's reply up to 7 days with the ``HUMAN_AGENT`` tag;
on WhatsApp, past 24 hours, only an approved template. The desk's outbox asks here, right
before it sends an agent's reply or a watchdog update, what may go:

- **open**: sent as usual;
- **human agent** (a person's reply, 24 hours to 7 days): sent with ``tag="HUMAN_AGENT"``;
  the assistant's own messages (the watchdog's) never carry the tag;
- **template only** (WhatsApp) and **closed**: not sent, never counted as delivered; the
  agent is told in the case's thread (on WhatsApp, with the template from support.yml
  that invites the customer back), and for a watchdog update the leads are told too.

The time of the customer's last message comes from the conversation itself (Rasa's
tracker: the last ``user`` event the customer sent on that channel), so a message the
customer wrote after the hand-off counts, and one the desk or a reminder triggered does
not. A platform that answers "outside the window" anyway (its clock, not ours) is read the
same way (``bot.channels.meta.GraphError.outside_window``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from bot.channels.meta import INSTAGRAM, MESSENGER, WHATSAPP, Window, window_for

if TYPE_CHECKING:
    from bot.ops import SupportConfig

HUMAN_AGENT_TAG = "HUMAN_AGENT"
WINDOW_CHANNELS = frozenset({MESSENGER, INSTAGRAM, WHATSAPP})
# What Rasa logs for an intent the desk or a reminder triggered, not typed by the customer.
_TRIGGERED_PREFIX = "EXTERNAL: "


@dataclass(frozen=True)
class ReopenTemplate:
    """The approved WhatsApp template that invites a customer back after 24 hours (support.yml)."""

    name: str
    language: str


def reopen_template(support: SupportConfig) -> ReopenTemplate | None:
    """Return the reopening template support.yml names (``whatsapp.reopen_template``), if any."""
    rules = support.whatsapp
    return ReopenTemplate(rules.reopen_template, rules.template_language) if rules.reopen_template else None


def has_window(channel: str) -> bool:
    """Return whether ``channel`` limits when a message may be sent."""
    return channel in WINDOW_CHANNELS


def last_customer_message(events: Iterable[Mapping[str, Any]], channel: str) -> datetime | None:
    """Return when the customer last wrote on ``channel`` in a conversation's ``events``, if ever."""
    last: float | None = None
    for event in events:
        if event.get("event") != "user" or str(event.get("text") or "").startswith(_TRIGGERED_PREFIX):
            continue
        if event.get("input_channel") not in (channel, None):
            continue
        stamp = event.get("timestamp")
        if isinstance(stamp, (int, float)):
            last = float(stamp) if last is None else max(last, float(stamp))
    return None if last is None else datetime.fromtimestamp(last, tz=timezone.utc)


def window_now(channel: str, last_message: datetime, now: datetime, *, human: bool) -> Window:
    """Return what may be sent on ``channel`` at ``now`` to a customer who last wrote at ``last_message``."""
    return window_for(channel, now - last_message, human=human)


def send_options(window: Window) -> dict[str, Any]:
    """Return the sender's options for a message sent in ``window`` (the tag, for a person's late reply)."""
    return {"tag": HUMAN_AGENT_TAG} if window is Window.HUMAN_AGENT else {}


def not_delivered_text(
    channel: str, window: Window, *, watchdog: str | None, template: ReopenTemplate | None, platform_said: bool = False
) -> str:
    """Return what the agent reads in the case's thread when a message could not go (Slack mrkdwn).

    ``platform_said``: the platform refused it (its clock), not the desk's own reckoning.
    """
    what = "The assistant's update" if watchdog else "Your reply"
    platform = {MESSENGER: "Messenger", INSTAGRAM: "Instagram", WHATSAPP: "WhatsApp"}.get(channel, channel)
    if platform_said:
        why = f"{platform} refused it as outside its messaging window" + (" of 24 hours" if channel == WHATSAPP else "")
    elif window is Window.TEMPLATE_ONLY:
        why = (
            "more than 24 hours have passed since the customer last wrote, and WhatsApp then delivers only "
            "approved templates"
        )
    elif watchdog:
        why = "more than 24 hours have passed since the customer last wrote (only a person's reply may go after that)"
    else:
        why = (
            "more than 7 days have passed since the customer last wrote (a person's reply may go with the "
            "HUMAN_AGENT tag up to 7 days; nothing after that)"
        )
    text = f":no_entry: {what} was *not delivered*: {why}. {platform} will deliver nothing until they write again."
    if channel == WHATSAPP and template is not None:
        text += (
            f" To invite them back, reply `template:` in this thread: it sends the approved template "
            f"`{template.name}` ({template.language})."
        )
    elif channel == WHATSAPP:
        text += " No reopening template is set (support.yml `whatsapp.reopen_template`)."
    return text


def lead_text(case_id: int, channel: str, watchdog: str) -> str:
    """Return what the leads read when a watchdog message to a customer could not be delivered."""
    return (
        f":warning: Case #{case_id}: the customer was *not* told ({watchdog.replace('_', ' ')}): {channel} does not "
        "deliver outside its messaging window. Nobody has told them about the delay; see the case's thread."
    )
