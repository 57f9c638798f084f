"""What the customer already said: answers to the case questions found in a message.

"i want to return the jacket i bought, it's the wrong size. order AC-2291734" answers
all three questions of a return: the order number, return rather than exchange, and
the item and reason. The form asks only what is still missing, and the summary shows
what was found like any other answer.

Pure functions of the message text and the entities Rasa's RegexEntityExtractor found
in it (``data/nlu/regex.yml`` and ``data/nlu/lookups.yml``: order numbers, email
addresses, amounts, dates, product nouns, devices); the kind of problem is read with
a few patterns per answer. Conservative on purpose: a wrong answer filled in for the
customer is worse than a question, so a slot is filled only when the message says it
plainly: "can I return or exchange it?" fills neither, two different order numbers or
two products fill none, what follows an "if" is not taken as a fact, and a bare number
is an order number only in a message about an order (not "call me on 5632156987").

Answers that match a button of the question are given as that button's payload
(``domain/responses.yml``), so the case reads the same whether the customer typed it
or pressed the button.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from bot import validation
from bot.constants import ENTITY_EMAIL, ENTITY_ORDER_NUMBER
from bot.prefill_patterns import (
    _ARTICLE,
    _CANCEL_BECAUSE,
    _CANCEL_REASON,
    _CANNOT_CANCEL,
    _CANNOT_LOG_IN,
    _CHARGED_TWICE,
    _CLAUSE_BREAK,
    _EITHER_OR,
    _EXCHANGE,
    _FAULT,
    _HYPOTHETICAL,
    _INVOICE,
    _INVOICE_DISPUTED,
    _LATE,
    _LEADING_FILLER,
    _LEADING_HANDLES,
    _LEADING_OWNER,
    _LINK,
    _LOCKED,
    _NOT_AN_ORDER_BEFORE,
    _NOT_RECEIVED,
    _NO_CODE,
    _ORDER_CUE,
    _OUTCOME,
    _PASSWORD,
    _PAYMENT_FAILED,
    _POLICY,
    _POLITE_IF,
    _PRONOUN_COPULA,
    _QUESTION,
    _REFUND_STATUS,
    _REFUND_WANTED,
    _RELATIVE_DATE,
    _REQUESTED_CHANGE,
    _RETURN,
    _RETURN_OR_EXCHANGE_VERB,
    _RETURN_REASON,
    _SAYS_DELIVERED,
    _SENTENCE_END,
    _TRACKING_STUCK,
    _TRAILING_PUNCTUATION,
    _UNEXPECTED_FEE,
)

# --- entities (data/nlu/regex.yml, data/nlu/lookups.yml) --------------------------------
ENTITY_AMOUNT = "amount"
ENTITY_DATE = "date"
ENTITY_PRODUCT = "product"
ENTITY_DEVICE = "device"

# --- the button answers (payloads of the utter_ask_<slot> buttons) ----------------------
DELIVERY_LATE = "It's late"
DELIVERY_TRACKING_STUCK = "Tracking hasn't moved"
DELIVERY_SAYS_DELIVERED = "Says delivered, but it isn't here"
RETURN_FOR_REFUND = "Return it for a refund"
RETURN_EXCHANGE = "Exchange it"
RETURN_REFUND_STATUS = "Check the status of my refund"
BILLING_CHARGED_TWICE = "I was charged twice"
BILLING_PAYMENT_FAILED = "My payment failed"
BILLING_INVOICE = "I need an invoice"
BILLING_UNEXPECTED_FEE = "There's a fee I didn't expect"
ACCESS_CANNOT_LOG_IN = "I can't log in"
ACCESS_PASSWORD_RESET = "I need to reset my password"
ACCESS_NO_CODE = "The verification code doesn't arrive"
ACCESS_LOCKED = "My account is locked"

# Which button answers each slot can be given, for checking them against the domain.
BUTTON_ANSWERS: dict[str, tuple[str, ...]] = {
    "delivery_problem": (DELIVERY_LATE, DELIVERY_TRACKING_STUCK, DELIVERY_SAYS_DELIVERED),
    "return_request": (RETURN_FOR_REFUND, RETURN_EXCHANGE, RETURN_REFUND_STATUS),
    "billing_problem": (BILLING_CHARGED_TWICE, BILLING_PAYMENT_FAILED, BILLING_INVOICE, BILLING_UNEXPECTED_FEE),
    "access_problem": (ACCESS_CANNOT_LOG_IN, ACCESS_PASSWORD_RESET, ACCESS_NO_CODE, ACCESS_LOCKED),
}

# Joins the item and the reason of a return: "jacket — wrong size".
ITEM_SEPARATOR = " — "
# How far before a number to look for what it is ("contact number", "zip code").
ORDER_CONTEXT_CHARS = 30



@dataclass(frozen=True)
class Span:
    """One entity found in the message."""

    entity: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Message:
    """A customer's message and the entities found in it, overlaps resolved."""

    text: str
    spans: tuple[Span, ...]

    @classmethod
    def read(cls, text: Optional[str], entities: Iterable[Mapping[str, Any]] = ()) -> "Message":
        """Build a message from its text and the entities as Rasa gives them.

        RegexEntityExtractor reports every match of every pattern, so "phone case" is
        also a "phone" and "£12345" also an order number "12345": of overlapping spans
        the longest is kept. A span that touches an '@' is a handle or an email address,
        never an order number.
        """
        text = text or ""
        spans: list[Span] = []
        for entity in entities:
            name, value = entity.get("entity"), entity.get("value")
            if not isinstance(name, str) or not isinstance(value, str) or not value.strip():
                continue
            start = entity.get("start")
            if not isinstance(start, int) or text[start : start + len(value)] != value:
                start = text.find(value)
            if start < 0:
                continue
            span = Span(name, value, start, start + len(value))
            if name == ENTITY_ORDER_NUMBER and _touches_at_sign(text, span):
                continue
            spans.append(span)
        kept: list[Span] = []
        for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
            if all(span.end <= other.start or span.start >= other.end for other in kept):
                kept.append(span)
        return cls(text=text, spans=tuple(sorted(kept, key=lambda s: s.start)))

    def values(self, entity: str) -> list[str]:
        """Return the distinct values of ``entity``, in the order they appear."""
        seen: dict[str, str] = {}
        for span in self.spans:
            if span.entity == entity:
                seen.setdefault(" ".join(span.value.lower().split()), span.value)
        return list(seen.values())

    @property
    def sentences(self) -> list[str]:
        """Return the message's sentences, without links (their dots and colons split nothing)."""
        return [part for part in _SENTENCE_END.split(_LINK.sub(" ", self.text)) if part and part.strip()]


def _touches_at_sign(text: str, span: Span) -> bool:
    before = text[span.start - 1] if span.start > 0 else ""
    after = text[span.end] if span.end < len(text) else ""
    return "@" in (before, after)


def _tidy(text: str) -> str:
    """Return ``text`` without links and leading @handles, on one line."""
    text = _LEADING_HANDLES.sub("", _LINK.sub("", " ".join(text.split())))
    return " ".join(text.split())


def _clean(text: str) -> str:
    return _tidy(text).strip(_TRAILING_PUNCTUATION)


def _find(pattern: re.Pattern[str], message: Message) -> Optional[tuple[str, re.Match[str]]]:
    """Return the first sentence where ``pattern`` matches as a statement, and the match.

    A match after "if", "what if", "in case" ... in its sentence is a hypothesis
    ("what if it's late?"), not something the customer says happened.
    """
    for sentence in message.sentences:
        for match in pattern.finditer(sentence):
            if not _HYPOTHETICAL.search(_POLITE_IF.sub("", sentence[: match.start()])):
                return sentence, match
    return None


def _says(pattern: re.Pattern[str], message: Message) -> bool:
    return _find(pattern, message) is not None


def _clause_end(sentence: str, position: int) -> int:
    """Return where the clause of ``sentence`` that holds ``position`` ends."""
    for brk in _CLAUSE_BREAK.finditer(sentence, position):
        if brk.start() > position:
            return brk.start()
    return len(sentence)


def _clause_at(sentence: str, position: int) -> str:
    """Return the clause of ``sentence`` that holds ``position``."""
    start = 0
    for brk in _CLAUSE_BREAK.finditer(sentence):
        if brk.end() > position:
            break
        start = brk.end()
    return sentence[start : _clause_end(sentence, position)]


def _without_subject(clause: str) -> str:
    """Return a clause without its leading filler and pronoun: "it's too small" -> "too small"."""
    clause = _LEADING_FILLER.sub("", _clean(clause))
    without_pronoun = _PRONOUN_COPULA.sub("", clause, count=1)
    if without_pronoun != clause:
        clause = _ARTICLE.sub("", without_pronoun, count=1)
    return _clean(clause)


def _mentions(text: str, words: Iterable[str]) -> bool:
    return any(re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) for word in words)


def _items(message: Message) -> list[str]:
    """Return the products the message names, as the customer wrote them (all-caps lowered)."""
    return [value.lower() if value.isupper() else value for value in message.values(ENTITY_PRODUCT)]


def _item(message: Message) -> Optional[str]:
    """Return the product the message is about, when it names exactly one.

    "is the blender dishwasher safe?" names two nouns of the table; which one the case
    is about is the customer's to say.
    """
    return _one(_items(message))


def _one(values: Sequence[str]) -> Optional[str]:
    """Return the value when there is exactly one: two order numbers are not a guess we make."""
    return values[0] if len(values) == 1 else None


# --- one reader per answer slot -------------------------------------------------------------


def order_number(message: Message) -> Optional[str]:
    """Return the order number, upper-cased and without '#', when the message gives exactly one."""
    values = [
        span.value
        for span in message.spans
        if span.entity == ENTITY_ORDER_NUMBER
        and not _NOT_AN_ORDER_BEFORE.search(message.text[max(0, span.start - ORDER_CONTEXT_CHARS) : span.start])
    ]
    if not values:
        return None
    # A prefix ("AC-2291734") makes it an order number; bare digits need the message to
    # talk about an order ("order 48213907", "#48213"): otherwise they may be a phone
    # number or a postcode.
    if not any(re.match(r"#?[A-Za-z]", value) for value in values) and not _ORDER_CUE.search(message.text):
        return None
    numbers = {validation.order_number(value) for value in values}
    return _one(sorted(number for number in numbers if number))


def account_email(message: Message) -> Optional[str]:
    """Return the email address, lower-cased, when the message gives exactly one."""
    emails = {validation.email(value) for value in message.values(ENTITY_EMAIL)} - {None}
    return _one(sorted(address for address in emails if address))


def delivery_problem(message: Message) -> Optional[str]:
    """Return which delivery button the message amounts to: says delivered, tracking stuck, or late."""
    found = _find(_SAYS_DELIVERED, message)
    if found and _NOT_RECEIVED.search(found[0]):
        return DELIVERY_SAYS_DELIVERED
    if found:
        return None  # "it says delivered" and nothing more: not for us to guess.
    if _says(_TRACKING_STUCK, message):
        return DELIVERY_TRACKING_STUCK
    if _says(_LATE, message):
        return DELIVERY_LATE
    return None


def requested_change(message: Message) -> Optional[str]:
    """Return the change asked for, when the message says what it should become ("address to ...")."""
    found = _find(_REQUESTED_CHANGE, message)
    if not found:
        return None
    sentence, match = found
    return _clean(sentence[match.start() :]) or None


def cancel_reason(message: Message) -> Optional[str]:
    """Return why the customer cancels, when they say so ("because ...", "changed my mind")."""
    found = _find(_CANCEL_BECAUSE, message)
    if found and _CANNOT_CANCEL.search(found[0]):
        return None
    if found:
        reason = _without_subject(found[1].group("reason"))
        if len(reason.split()) >= 2 and not _HYPOTHETICAL.match(reason):
            return reason
    found = _find(_CANCEL_REASON, message)
    if found:
        sentence, match = found
        return _clean(sentence[match.start() : _clause_end(sentence, match.start())]) or None
    return None


def return_request(message: Message) -> Optional[str]:
    """Return whether the customer wants a refund, an exchange, or news of their refund.

    Both a refund and an exchange, or "return or exchange", is a choice the customer
    has not made yet: nothing is filled. Nor is a question about the returns policy.
    """
    if _says(_POLICY, message) or _says(_EITHER_OR, message):
        return None
    exchange = _says(_EXCHANGE, message)
    if _says(_REFUND_STATUS, message) and not exchange:
        return RETURN_REFUND_STATUS
    if exchange:
        return None if _says(_REFUND_WANTED, message) else RETURN_EXCHANGE
    if _says(_RETURN, message):
        return RETURN_FOR_REFUND
    return None


def return_reason(message: Message) -> Optional[str]:
    """Return the item and the reason for a return: "jacket — wrong size".

    Filled only when the message gives a reason; the item is added when the message
    names one the reason does not already mention.
    """
    found = _find(_RETURN_REASON, message)
    if not found:
        return None
    sentence, match = found
    reason = _without_subject(_clause_at(sentence, match.start()))
    if _RETURN_OR_EXCHANGE_VERB.search(reason):
        # "i want to send these back as they're too small": keep only the reason.
        reason = _clean(sentence[match.start() : _clause_end(sentence, match.start())])
    if not reason:
        return None
    item = _item(message)
    return f"{item}{ITEM_SEPARATOR}{reason}" if item and not _mentions(reason, [item]) else reason


def billing_problem(message: Message) -> Optional[str]:
    """Return which billing button the message amounts to."""
    for pattern, answer in (
        (_CHARGED_TWICE, BILLING_CHARGED_TWICE),
        (_PAYMENT_FAILED, BILLING_PAYMENT_FAILED),
        (_UNEXPECTED_FEE, BILLING_UNEXPECTED_FEE),
    ):
        if _says(pattern, message):
            return answer
    invoice = _find(_INVOICE, message)
    if invoice and not _INVOICE_DISPUTED.search(invoice[0]):
        return BILLING_INVOICE
    return None


def charge_details(message: Message) -> Optional[str]:
    """Return the amount, and the date when given: "£49.99 on 3 March".

    The amount is what finds a charge; a date alone still leaves the question open.
    """
    amounts = message.values(ENTITY_AMOUNT)
    if not amounts:
        return None
    details = " and ".join(_clean(amount) for amount in amounts)
    dates = message.values(ENTITY_DATE)
    if len(dates) == 1:
        date = _clean(dates[0])
        details += f" {date}" if _RELATIVE_DATE.match(date) else f" on {date}"
    return details


def access_problem(message: Message) -> Optional[str]:
    """Return which access button the message amounts to, the most specific first."""
    for pattern, answer in (
        (_LOCKED, ACCESS_LOCKED),
        (_NO_CODE, ACCESS_NO_CODE),
        (_PASSWORD, ACCESS_PASSWORD_RESET),
        (_CANNOT_LOG_IN, ACCESS_CANNOT_LOG_IN),
    ):
        if _says(pattern, message):
            return answer
    return None


def product_name(message: Message) -> Optional[str]:
    """Return the product the message is about: a product noun, else the device named."""
    if _items(message):
        return _item(message)
    return _one(message.values(ENTITY_DEVICE))


def issue_description(message: Message) -> Optional[str]:
    """Return what is wrong, when the message says it: "stopped working" (the device added)."""
    found = _find(_FAULT, message)
    if not found:
        return None
    sentence, match = found
    clause = _clean(_clause_at(sentence, match.start()))
    for item in _items(message) + message.values(ENTITY_DEVICE):
        owner = re.match(_LEADING_OWNER + re.escape(item) + r"\s+(?:(?:is|are|was|were)\s+)?", clause, re.IGNORECASE)
        if owner and owner.end() < len(clause):
            clause = clause[owner.end() :]
            break
    description = _without_subject(clause)
    if not description:
        return None
    devices = [device for device in message.values(ENTITY_DEVICE) if not _mentions(description, [device])]
    if len(devices) == 1 and devices[0] != product_name(message):
        description += f" (on {devices[0]})"
    return description


def question_detail(message: Message) -> Optional[str]:
    """Return the customer's question, when the message asks one (price, size, stock, ...)."""
    text = _tidy(message.text)
    # "what if it doesn't fit?" is a question too: no hypothesis guard here.
    if len(text.split()) < 2 or not _QUESTION.search(text):
        return None
    return text


def desired_outcome(message: Message) -> Optional[str]:
    """Return what would put it right, when the customer asks for it ("I want a refund")."""
    found = _find(_OUTCOME, message)
    return _clean(found[1].group("outcome")) if found else None


READERS: dict[str, Callable[[Message], Optional[str]]] = {
    "order_number": order_number,
    "delivery_problem": delivery_problem,
    "requested_change": requested_change,
    "cancel_reason": cancel_reason,
    "return_request": return_request,
    "return_reason": return_reason,
    "billing_problem": billing_problem,
    "charge_details": charge_details,
    "account_email": account_email,
    "access_problem": access_problem,
    "product_name": product_name,
    "issue_description": issue_description,
    "question_detail": question_detail,
    "desired_outcome": desired_outcome,
}
"""How each answer slot is read from a message. Slots not listed (complaint_detail,
case_correction) are always asked: the customer's own account is what they want."""


def prefill(
    text: Optional[str], entities: Iterable[Mapping[str, Any]], slots: Iterable[str]
) -> dict[str, str]:
    """Return the answers ``text`` already gives to the questions ``slots``.

    Args:
        text: The customer's message.
        entities: The entities Rasa found in it (``entity``, ``value``, ``start``, ``end``).
        slots: The answer slots still open: the case type's questions (its form's
            required slots) that are not answered yet.

    Returns:
        Slot -> answer, for the slots the message answers plainly; the others are
        left out, to be asked.
    """
    message = Message.read(text, entities)
    if not message.text.strip() or message.text.lstrip().startswith("/"):
        return {}
    answers: dict[str, str] = {}
    for slot in slots:
        reader = READERS.get(slot)
        value = reader(message) if reader else None
        if value:
            answers[slot] = value
    return answers
