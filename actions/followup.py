"""After an agent resolved a case: did it solve it, a rating, and "not solved" reopens it.

The agent desk resumes the conversation and triggers ``EXTERNAL_case_resolved``; the
rules in ``data/rules/followup.yml`` chain these actions with the questions in
``domain/followup.yml``. Each action finds the case from the ``case_id`` slot (or the
customer's latest resolved case) and checks it belongs to this conversation before
touching it; the answers are stored on the case, with a note for the case's Slack thread
queued in the same transaction.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.events import ConversationPaused, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import DomainDict, ServiceAction
from actions.handoff import DEFAULT_CHANNEL
from bot.cases import Case
from bot.constants import ACTION_FALLBACK, SLOT_CASE_ID, STATUS_RESOLVED
from bot.desk import messages

log = logging.getLogger(__name__)

SLOT_FOLLOWUP_PENDING = "followup_pending"
EXTERNAL_PREFIX = "EXTERNAL: "
_RATING = re.compile(r"(?<![\d.])([1-5])(?![\d.])")
_RATINGS = frozenset("12345")


def _belongs(case: Optional[Case], tracker: Tracker) -> bool:
    channel = tracker.get_latest_input_channel() or DEFAULT_CHANNEL
    return case is not None and case.sender_id == tracker.sender_id and case.channel == channel


class _FollowupAction(ServiceAction):
    """Finds the resolved case a follow-up is about."""

    def resolved_case(self, tracker: Tracker, *, asked: bool) -> Optional[Case]:
        """Return this conversation's resolved case, asked about (``asked``) or not yet, or None.

        The ``case_id`` slot names it; if the slot is empty or names another case (a new
        session cleared it), the customer's latest resolved case in that state is taken.
        """
        store = self.services.store
        slot = tracker.get_slot(SLOT_CASE_ID)
        candidates: List[Case] = []
        if slot and str(slot).isdigit():
            found = store.lookup.get(int(slot))
            if found is not None:
                candidates.append(found)
        channel = tracker.get_latest_input_channel() or DEFAULT_CHANNEL
        candidates.extend(reversed(store.lookup.cases_for_customer(channel, tracker.sender_id)))
        for case in candidates:
            if _belongs(case, tracker) and case.status == STATUS_RESOLVED and (case.followup_asked_at is not None) == asked:
                return case
        return None


class ActionFollowup(_FollowupAction):
    """Decides whether to ask how the case went: once per resolution."""

    def name(self) -> str:
        """Return the action's name."""
        return messages.ACTION_FOLLOWUP

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        """Mark the follow-up asked and set ``followup_pending`` so the rule asks the question."""
        external = str(tracker.latest_message.get("text") or "").startswith(EXTERNAL_PREFIX)
        case = self.resolved_case(tracker, asked=False)
        if case is not None and self.services.store.lifecycle.mark_followup_asked(case.id, self.services.now()):
            return [SlotSet(SLOT_CASE_ID, str(case.id)), SlotSet(SLOT_FOLLOWUP_PENDING, True)]
        if external:
            return [SlotSet(SLOT_FOLLOWUP_PENDING, False)]  # a repeated trigger: already asked
        # A customer's message the classifier took for the desk's trigger: treat it as unclear.
        return [SlotSet(SLOT_FOLLOWUP_PENDING, False), FollowupAction(ACTION_FALLBACK)]


class ActionFollowupSolved(_FollowupAction):
    """The customer says it is solved."""

    def name(self) -> str:
        """Return the action's name."""
        return messages.ACTION_FOLLOWUP_SOLVED

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        """Store ``solved`` on the case."""
        case = self.resolved_case(tracker, asked=True)
        if case is not None:
            notice = messages.followup_notice(case, messages.NOTICE_SOLVED)
            self.services.store.lifecycle.record_followup(case.id, self.services.now(), solved=True, outbox=[notice])
        return [SlotSet(SLOT_FOLLOWUP_PENDING, False)]


class ActionFollowupUnsolved(_FollowupAction):
    """The customer says it is not solved: the case goes back to the queue and a person takes over again."""

    def name(self) -> str:
        """Return the action's name."""
        return messages.ACTION_FOLLOWUP_UNSOLVED

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        """Reopen the case and pause the bot."""
        case = self.resolved_case(tracker, asked=True)
        if case is None:
            log.warning("follow-up: %s says not solved, but there is no resolved case to reopen", tracker.sender_id)
            return [SlotSet(SLOT_FOLLOWUP_PENDING, False)]
        notice = messages.followup_notice(case, messages.NOTICE_REOPENED, broadcast=True)
        self.services.store.lifecycle.reopen(case.id, self.services.now(), outbox=[notice])
        return [SlotSet(SLOT_FOLLOWUP_PENDING, False), ConversationPaused()]


class ActionFollowupRating(_FollowupAction):
    """The customer rates the help, 1 to 5."""

    def name(self) -> str:
        """Return the action's name."""
        return messages.ACTION_FOLLOWUP_RATING

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        """Store the rating on the case the customer was just asked about."""
        rating = rating_from(tracker.latest_message)
        case = self.resolved_case(tracker, asked=True)
        if rating is None or case is None or case.rating is not None:
            # Nothing to rate (e.g. "my case number is 3" read as a rating): treat it as unclear.
            return [FollowupAction(ACTION_FALLBACK)]
        notice = messages.followup_notice(case, messages.NOTICE_RATED, rating=rating)
        self.services.store.lifecycle.record_followup(case.id, self.services.now(), rating=rating, outbox=[notice])
        return []


def rating_from(message: Dict[str, Any]) -> Optional[int]:
    """Return the 1-5 rating in a parsed message: the ``rating`` entity, else a lone digit 1-5 in the text."""
    for entity in message.get("entities") or []:
        value = str(entity.get("value")).strip()
        if entity.get("entity") == messages.ENTITY_RATING and value in _RATINGS:
            return int(value)
    found = _RATING.search(str(message.get("text") or ""))
    return int(found.group(1)) if found else None
