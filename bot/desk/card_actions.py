"""What agents do on a case card and in its thread: claim, resolve, reassign, answer the customer.

A button's case must be the case whose card the button is on; only the owner of a case
(or a lead) may answer, reassign or resolve it (``bot.desk.listener``).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.channels.meta import WHATSAPP
from bot.constants import STATUS_CLAIMED, STATUS_WAITING
from bot.desk import cards, messages
from bot.desk.listener import CANNOT_CHECK, Listener
from bot.desk.text import is_note, is_template_request, plain_from_slack
from bot.desk.watchdog import is_late, late_pickup_text

if TYPE_CHECKING:
    from datetime import datetime

    from slack_bolt.context.ack.async_ack import AsyncAck

    from bot.cases import Case
    from bot.cases.records import OutboxMessage
    from bot.desk.customer_texts import CustomerTexts

log = logging.getLogger(__name__)

UNKNOWN_CARD = "This card is not a case the desk knows."
RESUME_EVENTS: list[dict[str, Any]] = list(messages.RESUME_EVENTS)


@dataclass
class CardActions(Listener):
    """The listeners of the case cards' buttons, the reassign form and the cards' threads.

    Attributes:
        texts: What customers are told, in their language (the late pickup's suggested apology).
    """

    texts: CustomerTexts

    # --- claim, resolve, reassign ----------------------------------------------------------

    async def on_claim(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Claim the case of the card for the user who pressed Claim (exactly one wins)."""
        pressed = await self._pressed(body, action)
        if pressed is None:
            return
        user, case, channel = pressed
        now = self.clock()
        notice = messages.thread_notice(case.id, f"claimed:{case.id}:{uuid.uuid4()}", messages.NOTICE_CLAIMED, by=user)
        outbox = [notice, *self._late_pickup(case, user, now)]
        won = await self._run(self.store.lifecycle.claim, case.id, user, now, outbox=outbox)
        if won:
            self.poke()
            return
        current = await self._run(self.store.lookup.get, case.id)
        holder = cards.user_ref(current.claimed_by) if current is not None else "someone"
        if current is not None and current.status == STATUS_CLAIMED:
            text = f"Case #{case.id} is already claimed by {holder}."
        else:
            text = f"Case #{case.id} is not waiting any more ({current.status if current else 'gone'})."
        await self.tell(user, channel, text)

    async def on_resolve(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Resolve the case: the bot resumes and asks the customer how it went."""
        pressed = await self._pressed(body, action)
        if pressed is None:
            return
        user, case, channel = pressed
        lead = self.directory.is_lead(user)
        if case.status == STATUS_WAITING and not lead:
            await self.tell(user, channel, f"Claim case #{case.id} before you resolve it.")
            return
        if not self._may_handle(case, user):
            await self.tell(user, channel, self._not_yours(case))
            return
        prefix = f"resolve:{case.id}:{case.reopened_count}"
        follow = [
            messages.thread_notice(case.id, f"{prefix}:notice", messages.NOTICE_RESOLVED, by=user),
            # The hand-off paused the bot right after its action: it never listened. Resume and
            # listen, so the triggered intent meets the rules as a new turn.
            messages.rasa_events(case, f"{prefix}:resume", RESUME_EVENTS),
            messages.rasa_trigger(case, f"{prefix}:followup", messages.INTENT_CASE_RESOLVED),
        ]
        done = await self._run(
            self.store.lifecycle.resolve, case.id, self.clock(),
            by=user, only_if_claimed_by=None if lead else user, outbox=follow,
        )  # fmt: skip
        if done:
            log.info("desk: case %s resolved by %s", case.id, user)
            self.poke()
        else:
            await self.tell(user, channel, f"Case #{case.id} changed meanwhile; nothing was resolved.")

    def _not_yours(self, case: Case) -> str:
        if case.status == STATUS_CLAIMED:
            return f"Case #{case.id} is {cards.user_ref(case.claimed_by)}'s: only they (or a lead) can do that."
        return f"Case #{case.id} is {case.status}: nothing to do."

    async def on_reassign_button(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Open the modal that asks whom to hand the case to."""
        pressed = await self._pressed(body, action)
        if pressed is None:
            return
        user, case, channel = pressed
        if not self._may_handle(case, user):
            await self.tell(user, channel, self._not_yours(case))
            return
        try:
            await self.client.views_open(trigger_id=str(body["trigger_id"]), view=cards.reassign_view(case, case.claimed_by))
        except SlackApiError as error:
            # The trigger expires in 3 seconds: this cannot wait in the outbox.
            log.warning("desk: could not open the reassign form: %s", error.response.get("error"))
            await self.tell(user, channel, "Slack did not open the form; press Reassign again.")

    async def on_reassign_submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Hand the case over, after checking the user, the new owner and that the case did not change."""
        user = str(body["user"]["id"])
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
            case_id, owner = int(meta["case_id"]), meta.get("owner")
            chosen = str(view["state"]["values"][cards.REASSIGN_BLOCK][cards.REASSIGN_SELECT]["selected_user"])
        except (KeyError, TypeError, ValueError):
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "Choose a person."})
            return
        allowed, target = await self._agent(user), await self._agent(chosen)
        if allowed is None or target is None:
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: CANNOT_CHECK})
            return
        if not target:
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "That person is not on the support team."})
            return
        case = await self._run(self.store.lookup.get, case_id)
        if not allowed or case is None or (case.status != STATUS_WAITING and not self._may_handle(case, user)):
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "Only the case's owner or a lead can reassign it."})
            return
        if case.status == STATUS_WAITING and not self.directory.is_lead(user):
            await ack(response_action="errors", errors={cards.REASSIGN_BLOCK: "Claim the case first, or ask a lead to assign it."})
            return
        await ack()
        notice = messages.thread_notice(
            case.id, f"reassigned:{case.id}:{uuid.uuid4()}", messages.NOTICE_REASSIGNED, by=user, to=chosen
        )
        now = self.clock()
        if case.status == STATUS_WAITING:
            moved = await self._run(
                self.store.lifecycle.claim, case.id, chosen, now, outbox=[notice, *self._late_pickup(case, chosen, now)]
            )
        else:
            moved = await self._run(
                self.store.lifecycle.reassign, case.id, str(owner or case.claimed_by), chosen, now, outbox=[notice]
            )
        if moved:
            self.poke()
        elif case.card_channel:
            await self.tell(user, case.card_channel, f"Case #{case.id} changed meanwhile; it was not reassigned.")

    # --- the thread: the conversation with the customer ---------------------------------------

    async def on_message(self, event: dict[str, Any]) -> None:
        """Relay an owner's reply in a card's thread to the customer; leave notes and other talk alone."""
        subtype = event.get("subtype")
        if event.get("bot_id") or subtype not in (None, "thread_broadcast", "file_share"):
            return
        channel, ts, thread_ts = str(event.get("channel") or ""), str(event.get("ts") or ""), event.get("thread_ts")
        user = str(event.get("user") or "")
        if not thread_ts or thread_ts == ts or not user:
            return  # not a reply in a thread
        case = await self._run(self.store.lookup.case_by_card, channel, str(thread_ts))
        if case is None:
            return  # a thread that is not a case's
        text = str(event.get("text") or "")
        if is_note(text):
            return  # internal: stays in the thread
        if not await self._check_agent(user, channel, str(thread_ts)):
            return
        refusal = None
        if case.status == STATUS_WAITING:
            refusal = f"Claim case #{case.id} first: your message was not sent to the customer."
        elif not self._may_handle(case, user):
            refusal = self._not_yours(case) + " Your message was not sent to the customer."
        elif subtype == "file_share":
            refusal = "Files are not sent to the customer; paste a link in your message instead."
        if refusal is not None:
            await self.tell(user, channel, refusal + " Start a message with `note:` to keep it in the team.", str(thread_ts))
            return
        plain = plain_from_slack(text)
        if not plain:
            return
        if is_template_request(plain) and case.channel == WHATSAPP:
            # Past WhatsApp's 24 hours only an approved template goes (bot.desk.windows).
            reply = messages.reopen_template(case, f"relay-out:{channel}:{ts}", user)
        else:
            reply = messages.customer_reply(case, f"relay-out:{channel}:{ts}", plain, user)
        await self._run(self.store.outbox.enqueue, [reply], self.clock())
        self.worker.wake()

    async def _pressed(self, body: dict[str, Any], action: dict[str, Any]) -> tuple[str, Case, str] | None:
        """Return who pressed a card's button, the card's case and channel; None (the user told why) if refused.

        Refused when the card is no case the desk knows or the user is no agent.
        """
        user = str(body["user"]["id"])
        case, channel, _ts = await self._card_case(body, action)
        if case is None:
            await self.tell(user, channel, UNKNOWN_CARD)
            return None
        if not await self._check_agent(user, channel):
            return None
        return user, case, channel

    async def _card_case(self, body: dict[str, Any], action: dict[str, Any]) -> tuple[Case | None, str, str]:
        """Return the case of the card a button was pressed on (checked against the button's value)."""
        container = body.get("container") or {}
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
        message_ts = str(container.get("message_ts") or (body.get("message") or {}).get("ts") or "")
        case = await self._run(self.store.lookup.case_by_card, channel, message_ts) if channel and message_ts else None
        if case is not None and str(action.get("value")) != str(case.id):
            log.warning("desk: button value %r does not match case %s of its card", action.get("value"), case.id)
            case = None
        return case, channel, message_ts

    def _late_pickup(self, case: Case, agent: str, now: datetime) -> list[OutboxMessage]:
        """Return the apology suggested to the agent who picks up ``case`` late (none if it is on time)."""
        if not is_late(case, now):
            return []
        key = f"late-pickup:{case.id}:{case.reopened_count}:{case.promise_updates}"
        return [messages.thread_message(case.id, key, late_pickup_text(case, agent, now, self.texts))]
