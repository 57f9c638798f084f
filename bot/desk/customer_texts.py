"""What the desk says to customers by itself, in the customer's language.

The watchdog's new estimate, check-in and closing message, and the first line suggested
to an agent who picks a case up late, are the ``utter_watchdog_*`` responses of
domain/desk.yml: English without a condition, every other language a variation on the
``language`` slot, as every response, so ops edit them in YAML and ``python -m bot ops
check`` lists one missing a switched-on language. Rasa never sends them; the desk reads
them once, when it starts (``CustomerTexts.load``), and refuses to start when one is
missing or names a placeholder it does not fill.

The case's language picks the variation: the case's own when it is switched on in
support.yml, else the brand's main language (the first of ``languages.answer_in``). A new
deadline is worded by ``bot.i18n.deadline_wording`` (Babel's clock times, weekdays and
durations; English keeps ``bot.eta``'s own wording).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from bot.constants import (
    APOLOGY_REASON_PREFIX,
    DELAY_REASONS,
    DESK_RESPONSES,
    REASON_BUSY,
    REASON_HOLIDAY,
    RESPONSE_WATCHDOG_APOLOGY,
    RESPONSE_WATCHDOG_APOLOGY_NAMED,
    RESPONSE_WATCHDOG_CHECKIN,
    RESPONSE_WATCHDOG_CHECKIN_NAMED,
    RESPONSE_WATCHDOG_CLOSE,
    RESPONSE_WATCHDOG_UPDATE,
    RESPONSE_WATCHDOG_UPDATE_NAMED,
    WATCHDOG_REASON_PREFIX,
)
from bot.i18n import closed_for, deadline_wording, variation_text

if TYPE_CHECKING:
    from datetime import datetime

    from bot.cases import Case
    from bot.eta import Promise
    from bot.eta.calendar import BusinessCalendar
    from bot.ops import SupportConfig

NAME = "customer_name"
CASE_ID = "case_id"
REASON = "reason"
PROMISE = "promise"
HOLIDAY = "holiday"
# The placeholders each response may name (it may leave any out).
_PLACEHOLDERS: Mapping[str, frozenset[str]] = {
    RESPONSE_WATCHDOG_UPDATE: frozenset({CASE_ID, REASON, PROMISE}),
    RESPONSE_WATCHDOG_UPDATE_NAMED: frozenset({NAME, CASE_ID, REASON, PROMISE}),
    RESPONSE_WATCHDOG_CHECKIN: frozenset({CASE_ID}),
    RESPONSE_WATCHDOG_CHECKIN_NAMED: frozenset({NAME, CASE_ID}),
    RESPONSE_WATCHDOG_CLOSE: frozenset({CASE_ID}),
    RESPONSE_WATCHDOG_APOLOGY: frozenset({CASE_ID, REASON}),
    RESPONSE_WATCHDOG_APOLOGY_NAMED: frozenset({NAME, CASE_ID, REASON}),
    f"{WATCHDOG_REASON_PREFIX}{REASON_HOLIDAY}": frozenset({HOLIDAY}),
}


class CustomerTextsError(ValueError):
    """A response the desk sends is missing from the domain, or names a placeholder the desk does not fill."""


@dataclass(frozen=True)
class Estimate:
    """A new estimate as one customer reads it.

    Attributes:
        wording: The new deadline ("within about 15 minutes", "bis morgen, Dienstag, 8:15 Uhr").
        reason: Why it is later than we said ("it's busier than usual", "hoy cerramos por Navidad").
    """

    wording: str
    reason: str


def first_name(case: Case) -> str | None:
    """Return the first word of the customer's name, or None when the case has none."""
    name = (case.customer_name or "").strip()
    return name.split()[0] if name else None


@dataclass(frozen=True)
class CustomerTexts:
    """The desk's own messages to customers, in each switched-on language.

    Attributes:
        responses: The domain's responses (``bot.ops.responses.load_responses``).
        languages: The switched-on languages, the brand's main one first.
    """

    responses: Mapping[str, Any]
    languages: tuple[str, ...]

    @classmethod
    def load(cls, support: SupportConfig, domain: Path | None = None) -> CustomerTexts:
        """Read the responses of ``domain`` (default: the project's domain/) and check them.

        Raises:
            CustomerTextsError: A response is missing, or a variation names an unknown placeholder.
        """
        from bot.ops.responses import load_responses
        from bot.ops.support import DEFAULT_DOMAIN_DIR

        texts = cls(load_responses(domain or DEFAULT_DOMAIN_DIR), support.languages.answer_in)
        texts.check()
        return texts

    def check(self) -> None:
        """Raise ``CustomerTextsError`` unless every response is there and fills only known placeholders."""
        for response in DESK_RESPONSES:
            variations = self.responses.get(response)
            if not variations:
                raise CustomerTextsError(_missing(response))
            allowed = _PLACEHOLDERS.get(response, frozenset())
            for variation in variations:
                text = variation.get("text") if isinstance(variation, Mapping) else None
                unknown = {field for _, field, _, _ in string.Formatter().parse(str(text or "")) if field} - allowed
                if unknown:
                    raise CustomerTextsError(
                        f"{response}: unknown placeholder {{{sorted(unknown)[0]}}} in {text!r} "
                        f"(it may use {', '.join('{' + name + '}' for name in sorted(allowed)) or 'none'})"
                    )

    def language(self, case: Case) -> str:
        """Return the language to write to the customer of ``case`` in: theirs if switched on, else the main one."""
        return case.language if case.language in self.languages else self.languages[0]

    def _say(self, response: str, language: str, **values: Any) -> str:
        text = variation_text(self.responses, response, language)
        if text is None:
            raise CustomerTextsError(_missing(response))
        return text.format(**values)

    def estimate(
        self, case: Case, promise: Promise, reason: str, now: datetime, calendar: BusinessCalendar
    ) -> Estimate:
        """Return the new ``promise`` made at ``now`` and its ``reason`` (``REASON_*``) in the case's language.

        A holiday the brand is closed for is said instead of "we're now closed": its name says more.
        """
        language = self.language(case)
        wording = deadline_wording(promise, now, self.responses, language)
        holiday = closed_for(promise, now, calendar)
        if holiday:
            said = self._say(f"{WATCHDOG_REASON_PREFIX}{REASON_HOLIDAY}", language, **{HOLIDAY: holiday})
        else:
            said = self._say(f"{WATCHDOG_REASON_PREFIX}{reason}", language)
        return Estimate(wording, said)

    def update(self, case: Case, estimate: Estimate) -> str:
        """Return the customer's update: sorry, why, and the new estimate (plain text, for their channel)."""
        name = first_name(case)
        values = {CASE_ID: case.id, REASON: estimate.reason, PROMISE: estimate.wording}
        if name:
            return self._say(RESPONSE_WATCHDOG_UPDATE_NAMED, self.language(case), **values, **{NAME: name})
        return self._say(RESPONSE_WATCHDOG_UPDATE, self.language(case), **values)

    def checkin(self, case: Case) -> str:
        """Return the check-in a silent customer gets."""
        name = first_name(case)
        if name:
            return self._say(RESPONSE_WATCHDOG_CHECKIN_NAMED, self.language(case), **{CASE_ID: case.id, NAME: name})
        return self._say(RESPONSE_WATCHDOG_CHECKIN, self.language(case), **{CASE_ID: case.id})

    def close(self, case: Case) -> str:
        """Return what a customer is told when their quiet case is closed."""
        return self._say(RESPONSE_WATCHDOG_CLOSE, self.language(case), **{CASE_ID: case.id})

    def apology(self, case: Case) -> str:
        """Return the first line an agent could send on picking up a late case (plain text, the customer's language)."""
        language = self.language(case)
        reason = case.delay_reason if case.delay_reason in DELAY_REASONS else REASON_BUSY
        values = {CASE_ID: case.id, REASON: self._say(f"{APOLOGY_REASON_PREFIX}{reason}", language)}
        name = first_name(case)
        if name:
            return self._say(RESPONSE_WATCHDOG_APOLOGY_NAMED, language, **values, **{NAME: name})
        return self._say(RESPONSE_WATCHDOG_APOLOGY, language, **values)


def _missing(response: str) -> str:
    return f"the response '{response}' is sent by the agent desk but missing from the domain"
