"""The watchdog: no promise slips in silence, and no quiet case stays open for ever.

It runs inside the desk process (``Desk.run_loops``), one tick every
``FIRSTREPLY_WATCHDOG_SECONDS``, in the desk process elected to run the loops
(``bot.election``: a PostgreSQL advisory lock, or a lock file next to a SQLite case
store). Each tick also takes or renews the ``watchdog`` lease in the case store (a row
with a holder and an expiry, one conditional UPDATE) and acts only while it holds it: a
second guard, for desks without an election (tests, tools) and for a leader cut off
mid-tick. A newly elected leader takes the lease over at once (``take_over``) rather than
waiting for the dead leader's lease to expire. Every action is also a conditional update
with its outbox messages in the same transaction and a unique key, so even two watchdogs
acting at once would queue nothing twice.

Each tick, for every open case (``support.yml`` ``watchdog``; shares are of the
promise in force, counted in open minutes from when it was made):

- **Escalation** — a waiting case nobody has claimed, at ``escalate_at`` of its
  promise: a message in the leads' channel mentioning ``oncall``, once per promise.
- **Honest update** — a waiting, unanswered case at ``update_at`` of its promise, or
  whose predicted pickup (``(place in queue + 0.5) × handle ÷ agents``) already passes
  its first deadline: a new estimate from ``bot.eta.estimate_promise`` with the time
  waited so far. If it is later than the deadline the customer was told, they get it,
  with the reason (we are closed, we are closing for the day, it is busier than usual,
  it is taking longer than usual), on their own channel and in the Rasa tracker, and it
  becomes the case's promise. Until then the tick looks again, so at the latest
  ``first_response_minutes`` before the deadline the customer hears from us.
- **Check-in** — a claimed case whose customer has not written since the agent's last
  reply, ``checkin_after_minutes`` open minutes later: "Is there anything else we can
  help with on case #12?".
- **Closing** — ``close_after_minutes`` open minutes after that check-in, still no word
  from the customer (and no agent reply): the case is closed, the customer told, the
  bot resumes the conversation, and the card shows it.

A case claimed after its promise gets a suggested apology for the agent when it is
claimed (``late_pickup_text``, used by the desk's claim).

What the customer reads (the update, the check-in, the closing message, the suggested
apology) is in their language: the ``utter_watchdog_*`` responses of domain/desk.yml,
read by ``bot.desk.customer_texts``. The notes in the card's thread are for the agents,
in English.

On Messenger, Instagram and WhatsApp the assistant may write only within 24 hours of the
customer's last message (``bot.desk.windows``). A new estimate that could not reach the
customer is not made: the promise they were told stays in force (and is broken, if it is),
and the leads and the case's thread are told once per promise that nobody can tell them.
The customer's last message is read from the case (its transcript, then the messages
relayed to its thread); the outbox checks again with Rasa's tracker before it sends.

Blocking (database work): the desk runs ``tick`` in a thread.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from bot.constants import (
    REASON_BUSY,
    REASON_CLOSED,
    REASON_CLOSING,
    REASON_SLOW,
    STATUS_CLAIMED,
    STATUS_WAITING,
    priority_rank,
)
from bot.channels.meta import Window
from bot.desk import messages, windows
from bot.desk.cards import user_ref
from bot.desk.customer_texts import CustomerTexts
from bot.desk.text import countdown_words, escape
from bot.eta import History, QueueSnapshot, estimate_promise
from bot.eta.estimate import expected_wait_minutes
from bot.i18n import DEFAULT_LANGUAGE, NAMES, WORDING_REASON, closed_for
from bot.services import answered_history

if TYPE_CHECKING:
    from bot.cases import Case, CaseStore
    from bot.cases.records import OutboxMessage
    from bot.eta import Promise
    from bot.ops import SupportConfig

log = logging.getLogger(__name__)

LEASE = "watchdog"
# Why a customer needs a new estimate, as the card's thread tells the agents (the
# customer's own words for it are responses: bot.desk.customer_texts).
REASON_FOR_AGENTS = {
    REASON_CLOSED: "we're now closed",
    REASON_CLOSING: "we're closing for the day",
    REASON_BUSY: "it's busier than usual",
    REASON_SLOW: "it's taking us longer than usual",
}
# Minutes the new deadline must add to the old one to be worth telling the customer.
_LATER_BY_MINUTES = 1.0
# A promise is not re-predicted from the queue in its first minutes: it was just computed
# from that same queue (with the safety factor and history the prediction leaves out), so
# an update then would only be noise. The simulation's scan runs every 5 minutes too.
PREDICTION_GRACE_MINUTES = 5.0


def holder_id() -> str:
    """Return a lease holder id unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def apology_line(case: Case, texts: CustomerTexts) -> str:
    """Return the first line an agent could send on picking up a late case (plain text, the customer's language)."""
    return texts.apology(case)


def is_late(case: Case, now: datetime) -> bool:
    """Return whether picking ``case`` up at ``now`` is late: past its promise, or after a new estimate."""
    return case.first_human_reply_at is None and (now > case.promised_by or case.promise_updates > 0)


def late_pickup_text(case: Case, agent: str, now: datetime, texts: CustomerTexts) -> str:
    """Return the thread message that gives the agent who picked up a late case a ready apology (mrkdwn).

    The apology is in the customer's language; when that is not English, the thread says which.
    """
    late = countdown_words(case.promised_by - now)
    updates = ""
    if case.promise_updates == 1:
        updates = " and was sent a new estimate"
    elif case.promise_updates > 1:
        updates = f" and was sent {case.promise_updates} new estimates"
    language = texts.language(case)
    named = f" (in {NAMES.get(language, language)})" if language != DEFAULT_LANGUAGE else ""
    return (
        f":bulb: {user_ref(agent)}, this customer waited longer than we first said (promise {late}){updates}. "
        f"Suggested first line{named}:\n>{escape(apology_line(case, texts))}"
    )


@dataclass(frozen=True)
class _Queue:
    """What the estimate needs to know about the queue now, read once per tick."""

    agents: int
    handle_minutes: float | None
    samples: int
    history: History
    ahead: dict[int, int]
    busy: int | None = None

    def snapshot(self, case: Case) -> QueueSnapshot:
        return QueueSnapshot(
            cases_ahead=self.ahead.get(case.id, 0),
            agents_on_shift=self.agents,
            recent_handle_minutes=self.handle_minutes,
            recent_samples=self.samples,
            history=self.history,
            agents_busy=self.busy,
            priority=case.priority,
        )


class Watchdog:
    """Watches open cases' promises and silences (see the module docstring)."""

    def __init__(
        self,
        store: CaseStore,
        support: SupportConfig,
        *,
        can_push: Callable[[str], bool] = lambda channel: True,
        holder: str | None = None,
        lease_seconds: float = 90.0,
        texts: CustomerTexts | None = None,
    ) -> None:
        """Watch ``store`` by the rules of ``support``; ``can_push`` says which channels can be sent to later.

        ``texts`` are what the customers are told (default: read from the project's domain/).
        """
        self.store = store
        self.support = support
        self.rules = support.watchdog
        self.calendar = support.calendar
        self.can_push = can_push
        self.holder = holder or holder_id()
        self.lease_seconds = lease_seconds
        self.texts = texts if texts is not None else CustomerTexts.load(support)

    # --- the tick --------------------------------------------------------------------------------

    def tick(self, now: datetime) -> int:
        """Look at every open case once, if this process holds the lease; return how many actions it queued."""
        if not self.rules.enabled:
            return 0
        if not self.store.desk.take_lease(LEASE, self.holder, now, self.lease_seconds):
            return 0
        open_cases = self.store.lookup.open_cases()
        waiting = [case for case in open_cases if case.status == STATUS_WAITING and case.first_human_reply_at is None]
        claimed = [case for case in open_cases if case.status == STATUS_CLAIMED and case.last_agent_reply_at is not None]
        done = 0
        if waiting:
            queue = self._queue(open_cases, now)
            for case in waiting:
                done += self._watch_promise(case, queue, now)
        if claimed:
            heard = self.store.outbox.last_queued([case.id for case in claimed], messages.RELAY_IN_PREFIX)
            for case in claimed:
                done += self._watch_silence(case, heard.get(case.id), now)
        return done

    def release(self, now: datetime) -> None:
        """Give the lease up (at shutdown), so another replica takes over at once."""
        self.store.desk.release_lease(LEASE, self.holder, now)

    def take_over(self, now: datetime) -> None:
        """Free the lease held by another holder: this process was just elected to watch (``bot.election``).

        The election makes this process the only one that should watch; a lease still held is
        a dead or cut-off leader's, and the next ``tick`` takes it.
        """
        holder = self.store.desk.lease_holder(LEASE, now)
        if holder is not None and holder != self.holder:
            log.info("watchdog: taking the lease over from %s", holder)
            self.store.desk.release_lease(LEASE, holder, now)

    def _queue(self, open_cases: list[Case], now: datetime) -> _Queue:
        window = self.support.history_window_days
        handle, samples = self.store.figures.recent_handle_minutes(now, window)
        # The order agents take the queue in: most urgent first, then oldest.
        order = sorted(
            (case for case in open_cases if case.status == STATUS_WAITING),
            key=lambda case: (-priority_rank(case.priority), case.created_at, case.id),
        )
        agents = self.store.desk.agents_on_shift()
        in_hand = sum(1 for case in open_cases if case.status == STATUS_CLAIMED)
        return _Queue(
            agents=agents,
            handle_minutes=handle,
            samples=samples,
            history=answered_history(self.store.figures, self.calendar, now, window),
            ahead={case.id: place for place, case in enumerate(order)},
            busy=min(agents, in_hand) if agents else None,
        )

    # --- promises ------------------------------------------------------------------------------

    def share_elapsed(self, case: Case, now: datetime) -> float:
        """Return how much of the promise in force has passed at ``now``, in open minutes (1 once due)."""
        if now >= case.promised_by:
            return 1.0
        total = self.calendar.business_minutes_between(case.promise_start, case.promised_by)
        if total <= 0:
            # A deadline inside closed time (never one of bot.eta's): count wall-clock time.
            wall = (case.promised_by - case.promise_start).total_seconds()
            return max(0.0, (now - case.promise_start).total_seconds()) / wall if wall > 0 else 1.0
        return max(0.0, self.calendar.business_minutes_between(case.promise_start, now)) / total

    def _watch_promise(self, case: Case, queue: _Queue, now: datetime) -> int:
        share = self.share_elapsed(case, now)
        done = 0
        escalated = case.escalated_promise is not None and case.escalated_promise >= case.promise_updates
        if share >= self.rules.escalate_at and not escalated:
            done += self._escalate(case, share, now)
        at_risk = share >= self.rules.update_at or (case.promise_updates == 0 and self._pickup_too_late(case, queue, now))
        if at_risk:
            done += self._update(case, queue, now)
        return done

    def _pickup_too_late(self, case: Case, queue: _Queue, now: datetime) -> bool:
        """Return whether the queue's own prediction of the pickup already passes the deadline.

        Only while open (nobody picks anything up while closed; the shares above cover that
        time) and not in the promise's first ``PREDICTION_GRACE_MINUTES``.
        """
        if (now - case.promise_start).total_seconds() < PREDICTION_GRACE_MINUTES * 60 or not self.calendar.is_open(now):
            return False
        predicted = expected_wait_minutes(queue.snapshot(case), self.support.targets)
        left = self.calendar.business_minutes_between(now, case.promised_by)
        return predicted > left

    def _escalate(self, case: Case, share: float, now: datetime) -> int:
        number = case.promise_updates
        key = f"{messages.ESCALATION_PREFIX}{case.id}:{number}"
        channel = self.support.lead_channel
        outbox = [
            messages.lead_post(case, key, channel, oncall=self.rules.oncall, share=round(share, 4)),
            messages.thread_message(
                case.id, f"{key}:notice",
                f":rotating_light: Escalated to the leads in {escape(channel)}: nobody has claimed this case and "
                f"{share:.0%} of its promise has passed.",
            ),
        ]  # fmt: skip
        return int(self.store.watch.mark_escalated(case.id, number, now, outbox=outbox))

    def _update(self, case: Case, queue: _Queue, now: datetime) -> int:
        if not self._can_write(case, now):
            return self._unreachable(case, now)
        waited = max(0.0, self.calendar.business_minutes_between(case.created_at, now))
        promise = estimate_promise(
            now, self.calendar, queue.snapshot(case), self.support.targets, waited_minutes=waited
        )
        if (promise.deadline - case.promised_by).total_seconds() < _LATER_BY_MINUTES * 60:
            return 0  # the estimate says the promise still holds: look again next tick
        reason = self._reason(case, promise, queue, now)
        wording, said = self._say(promise, reason, now)
        told = self.texts.estimate(case, promise, reason, now, self.calendar)
        number = case.promise_updates
        key = f"{messages.PROMISE_UPDATE_PREFIX}{case.id}:{number + 1}"
        outbox: list[OutboxMessage] = [
            messages.assistant_message(case, key, self.texts.update(case, told), "promise_update"),
            messages.thread_message(
                case.id, f"{key}:notice",
                f":hourglass: The customer was sent a new estimate ({escape(said)}): a person will reply "
                f"{escape(wording)}.",
            ),
        ]  # fmt: skip
        # The case keeps the wording the customer read, as it keeps their first promise's.
        done = self.store.watch.update_promise(
            case.id, number, promise.deadline, told.wording, reason, now, outbox=outbox
        )
        if done and not self.can_push(case.channel):
            log.warning("desk watchdog: case %s is on %s, which cannot be sent to later", case.id, case.channel)
        return int(done)

    def _can_write(self, case: Case, now: datetime) -> bool:
        """Return whether the assistant may write to the customer of ``case`` now (their platform's window)."""
        if not windows.has_window(case.channel):
            return True
        said = [line.at for line in case.transcript if line.who == "customer"]
        relayed = self.store.outbox.last_queued([case.id], messages.RELAY_IN_PREFIX).get(case.id)
        last = max([*said, *([relayed] if relayed else [])], default=case.created_at)
        return windows.window_now(case.channel, last, now, human=False) is Window.OPEN

    def _unreachable(self, case: Case, now: datetime) -> int:
        """Tell the leads and the thread, once per promise, that the customer cannot be sent a new estimate."""
        key = f"{messages.UNREACHABLE_PREFIX}{case.id}:{case.promise_updates}"
        outbox = [
            messages.thread_message(
                case.id, f"{key}:notice",
                f":no_entry: The promise is slipping, but {escape(case.channel)} lets the assistant write only within "
                "24 hours of the customer's last message: they cannot be sent a new estimate. Only a person's reply "
                "can still reach them (see the platform's window in the agent guide).",
            ),
            messages.lead_notice(case.id, f"{key}:lead", self.support.lead_channel,
                                 windows.lead_text(case.id, case.channel, "promise update")),
        ]  # fmt: skip
        return self.store.outbox.enqueue(outbox, now) // len(outbox)

    def _reason(self, case: Case, promise: Promise, queue: _Queue, now: datetime) -> str:
        """Return why the customer needs a new estimate: closed, closing before it, a long queue, or none of those."""
        if not self.calendar.is_open(now):
            return REASON_CLOSED
        wall = (promise.deadline - now).total_seconds() / 60
        if wall - self.calendar.business_minutes_between(now, promise.deadline) > 0.5:
            return REASON_CLOSING
        # A long queue: even with every agent free, this customer would not be next.
        agents = max(1, queue.agents or self.support.targets.default_agents_on_shift)
        if queue.ahead.get(case.id, 0) >= agents:
            return REASON_BUSY
        return REASON_SLOW

    def _say(self, promise: Promise, reason: str, now: datetime) -> tuple[str, str]:
        """Return the deadline's wording and the reason as the agents read them in the thread, the reason said once."""
        holiday = closed_for(promise, now, self.calendar)
        said = f"we are closed for {holiday}" if holiday else REASON_FOR_AGENTS[reason]
        return promise.wording.partition(WORDING_REASON)[0], said

    # --- silence -------------------------------------------------------------------------------

    def _watch_silence(self, case: Case, customer_wrote: datetime | None, now: datetime) -> int:
        agent_replied = case.last_agent_reply_at
        assert agent_replied is not None  # only such cases are watched
        if customer_wrote is not None and customer_wrote > agent_replied:
            return 0  # the customer answered: it is the agent's turn
        asked = case.checkin_at
        if asked is None or asked < agent_replied:
            if self.calendar.business_minutes_between(agent_replied, now) < self.rules.checkin_after_minutes:
                return 0
            if not self._can_write(case, now):
                return self._no_checkin(case, agent_replied, now)
            return self._checkin(case, agent_replied, now)
        if customer_wrote is not None and customer_wrote > asked:
            return 0
        if self.calendar.business_minutes_between(asked, now) < self.rules.close_after_minutes:
            return 0
        return self._close(case, asked, now)

    def _no_checkin(self, case: Case, agent_replied: datetime, now: datetime) -> int:
        """Tell the thread, once per agent reply, that no check-in can reach the customer (so none closes the case)."""
        notice = messages.thread_message(
            case.id, f"{messages.UNREACHABLE_PREFIX}{case.id}:checkin:{agent_replied.isoformat()}",
            f":no_entry: No word from the customer since your last reply, but {escape(case.channel)} lets the "
            "assistant write only within 24 hours of their last message: no check-in was sent, and the case will not "
            "close by itself. Resolve it when you judge it done.",
        )  # fmt: skip
        return self.store.outbox.enqueue([notice], now)

    def _checkin(self, case: Case, agent_replied: datetime, now: datetime) -> int:
        key = f"{messages.CHECKIN_PREFIX}{case.id}:{agent_replied.isoformat()}"
        outbox = [
            messages.assistant_message(case, key, self.texts.checkin(case), "checkin"),
            messages.thread_message(
                case.id, f"{key}:notice",
                f":wave: No word from the customer for {_minutes(self.rules.checkin_after_minutes)} open minutes after "
                "the last reply: the assistant asked whether they need anything else. Without an answer the case "
                f"closes {_minutes(self.rules.close_after_minutes)} open minutes later.",
            ),
        ]  # fmt: skip
        return int(
            self.store.watch.record_checkin(
                case.id, agent_replied, now, customer_key_prefix=messages.RELAY_IN_PREFIX, outbox=outbox
            )
        )

    def _close(self, case: Case, asked: datetime, now: datetime) -> int:
        key = f"{messages.CLOSE_PREFIX}{case.id}:{asked.isoformat()}"
        outbox = [
            messages.assistant_message(case, key, self.texts.close(case), "closed"),
            # The hand-off paused the bot; closing gives the conversation back to it.
            messages.rasa_events(case, f"{key}:resume", list(messages.RESUME_EVENTS)),
            messages.thread_message(
                case.id, f"{key}:notice",
                ":lock: Closed: the customer did not answer the check-in. The assistant is back in the "
                "conversation; if they write again, it is a new request.",
            ),
        ]  # fmt: skip
        return int(
            self.store.watch.close_stale(
                case.id, asked, now, customer_key_prefix=messages.RELAY_IN_PREFIX, outbox=outbox
            )
        )


def _minutes(value: float) -> str:
    return f"{value:g}"
