"""Share the case back to the customer, then hand it to a person with an honest promise."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List

from rasa_sdk import Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import DomainDict, ServiceAction, case_labels, case_questions, customer_language, summary_words
from bot import conversation
from bot.cases import NewCase, TranscriptLine
from bot.casefile import CaseFile, read_case_file
from bot.constants import (
    ORIGIN_PUBLIC_POST,
    ACTION_HANDOFF,
    DEFAULT_CHANNEL,
    ACTION_SUMMARIZE,
    ACTION_TELL_RESPONSE_TIME,
    OPEN_STATUSES,
    SLOT_CASE_ADDITIONS,
    SLOT_CASE_ID,
    SLOT_CORRECTION,
)
from bot.eta import Promise
from bot.i18n import promise_wording
from bot.priority import case_priority
from bot.services import Services, opening_record, promise_and_queue, promise_for

QUOTE_PRIORITY = "normal"


def _slots_with_correction(tracker: Tracker) -> tuple[Dict[str, Any], List[EventType]]:
    """Return the slots with a pending correction moved into the case additions."""
    slots = dict(tracker.slots)
    correction = slots.get(SLOT_CORRECTION)
    if not correction:
        return slots, []
    additions = [*(slots.get(SLOT_CASE_ADDITIONS) or []), str(correction)]
    slots[SLOT_CASE_ADDITIONS], slots[SLOT_CORRECTION] = additions, None
    return slots, [SlotSet(SLOT_CASE_ADDITIONS, additions), SlotSet(SLOT_CORRECTION, None)]


def _case_file(tracker: Tracker, domain: DomainDict) -> tuple[CaseFile, List[EventType]]:
    slots, events = _slots_with_correction(tracker)
    language = customer_language(tracker)
    case_file = read_case_file(
        tracker.events, slots, case_labels(domain, language), case_questions(domain), summary_words(domain, language)
    )
    return case_file, events


def _promise_wording(services: Services, promise: Promise, now: datetime, tracker: Tracker, domain: DomainDict) -> str:
    """Return the promise in the customer's language (English keeps bot.eta's wording)."""
    hint = conversation.reported_language(conversation.current_session(tracker.events))
    return promise_wording(
        promise, now, services.support.calendar, domain.get("responses") or {}, customer_language(tracker), hint
    )


def _case_metadata(case_file: CaseFile, route: str) -> Dict[str, Any]:
    """Return the case's metadata: where it is posted, the customer's handle, where it began if a public post."""
    found: Dict[str, Any] = {"route": route}
    if case_file.customer_handle:
        found["customer_handle"] = case_file.customer_handle
    if case_file.public_post is not None:
        found.update(origin=ORIGIN_PUBLIC_POST, public_post=dict(case_file.public_post))
    return found


class ActionSummarizeCase(ServiceAction):
    """Sums the case up in one message and asks the customer to confirm or correct it."""

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_SUMMARIZE

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Send the summary with "yes" / "correct it" buttons."""
        case_file, events = _case_file(tracker, domain)
        dispatcher.utter_message(response="utter_summary", summary=case_file.summary)
        return events


class ActionHandoff(ServiceAction):
    """Opens the case for the human team, tells the customer when a person will reply, pauses."""

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_HANDOFF

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Open the case (once, however often this runs for the same message) and pause."""
        services = self.services
        now = services.now()
        case_file, events = _case_file(tracker, domain)
        channel = tracker.get_latest_input_channel() or DEFAULT_CHANNEL
        previous = services.store.lookup.cases_for_customer(channel, tracker.sender_id)
        priority = case_priority(
            case_file.case_type,
            case_file.complaint_score,
            case_file.hostility,
            sum(1 for case in previous if case.status in OPEN_STATUSES),
            services.support.priority,
            case_file.public_post,
        )
        promise, queue = promise_and_queue(services, priority, now)
        wording = _promise_wording(services, promise, now, tracker, domain)
        latest = conversation.user_events(tracker.events)[-1:]
        # The channel's message id, when it gave one: a message handled again after a crash
        # gets a new timestamp but keeps its id, and must not open a second case.
        message_at = (latest[0].get("message_id") or latest[0].get("timestamp")) if latest else now.timestamp()
        case = services.store.lifecycle.open_case(
            NewCase(
                channel=channel,
                sender_id=tracker.sender_id,
                customer_name=case_file.customer_name,
                case_type=case_file.case_type,
                intent_confidence=case_file.intent_confidence,
                answers=case_file.answers,
                summary=case_file.summary,
                transcript=[TranscriptLine(line.who, line.text, line.at) for line in case_file.transcript],
                language=case_file.language,
                priority=priority,
                complaint_score=case_file.complaint_score,
                promised_by=promise.deadline,
                promise_wording=wording,
                handoff_key=f"{channel}:{tracker.sender_id}:{message_at}",
                metadata={
                    **_case_metadata(
                        case_file,
                        services.support.routing.channel_for(case_file.case_type, priority, case_file.language),
                    ),
                    **({"language_note": case_file.language_note} if case_file.language_note else {}),
                    **opening_record(promise, queue),
                },
            ),
            now,
        )
        first = conversation.first_name(case_file.customer_name)
        dispatcher.utter_message(
            response="utter_handoff_named" if first else "utter_handoff",
            customer_name=first,
            case_id=case.id,
            promise=wording,
        )
        return [*events, SlotSet(SLOT_CASE_ID, str(case.id)), ConversationPaused()]


class ActionTellResponseTime(ServiceAction):
    """Answers "when will someone answer?" with the current estimate."""

    def name(self) -> str:
        """Return the action's name."""
        return ACTION_TELL_RESPONSE_TIME

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        """Quote the promise a new case of normal priority would get now."""
        services = self.services
        now = services.now()
        promise = promise_for(services, QUOTE_PRIORITY, now)
        dispatcher.utter_message(
            response="utter_response_time", promise=_promise_wording(services, promise, now, tracker, domain)
        )
        return []
