"""Tests for bot.prefill: the answers a customer's message already gives.

The entities come from Rasa's real RegexEntityExtractor, trained on the project's NLU
data with the settings in config.yml, so the patterns in data/nlu/regex.yml and the
lookup tables in data/nlu/lookups.yml are tested together with what reads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from bot import prefill
from bot.constants import ANSWER_SLOTS, ENTITY_EMAIL, ENTITY_ORDER_NUMBER
from bot.prefill import (
    ACCESS_CANNOT_LOG_IN,
    ACCESS_LOCKED,
    ACCESS_NO_CODE,
    ACCESS_PASSWORD_RESET,
    BILLING_CHARGED_TWICE,
    BILLING_INVOICE,
    BILLING_PAYMENT_FAILED,
    BILLING_UNEXPECTED_FEE,
    DELIVERY_LATE,
    DELIVERY_SAYS_DELIVERED,
    DELIVERY_TRACKING_STUCK,
    RETURN_EXCHANGE,
    RETURN_FOR_REFUND,
    RETURN_REFUND_STATUS,
)
from tests.conftest import ROOT

Entities = List[Dict[str, Any]]


class Extractor:
    """The shipped RegexEntityExtractor, trained as `rasa train` trains it."""

    def __init__(self, tmp: Path) -> None:
        """Train the extractor on data/nlu with config.yml's settings for it."""
        from rasa.engine.graph import ExecutionContext, GraphSchema
        from rasa.engine.storage.local_model_storage import LocalModelStorage
        from rasa.engine.storage.resource import Resource
        from rasa.nlu.extractors.regex_entity_extractor import RegexEntityExtractor
        from rasa.shared.nlu.training_data.loading import load_data

        pipeline = yaml.safe_load((ROOT / "config.yml").read_text())["pipeline"]
        settings = next(component for component in pipeline if component["name"] == "RegexEntityExtractor")
        config = {**RegexEntityExtractor.get_default_config(), **{k: v for k, v in settings.items() if k != "name"}}
        self._extractor = RegexEntityExtractor.create(
            config, LocalModelStorage(tmp), Resource("regex_entities"), ExecutionContext(GraphSchema({}), "test")
        )
        self._extractor.train(load_data(str(ROOT / "data" / "nlu")))
        self.patterns = {pattern["name"] for pattern in self._extractor.patterns}

    def entities(self, text: str) -> Entities:
        """Return the entities Rasa finds in ``text``."""
        from rasa.shared.nlu.training_data.message import Message

        message = Message(data={"text": text})
        self._extractor.process([message])
        return list(message.get("entities") or [])


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> Extractor:
    return Extractor(tmp_path_factory.mktemp("regex_entities"))


@pytest.fixture(scope="module")
def questions() -> Dict[str, List[str]]:
    """Return case type -> the answer slots its form asks (domain/cases.yml)."""
    forms = yaml.safe_load((ROOT / "domain" / "cases.yml").read_text())["forms"]
    return {name[: -len("_form")]: list(form["required_slots"]) for name, form in forms.items()}


def _prefill(extractor: Extractor, questions: Dict[str, List[str]], case_type: str, text: str) -> Dict[str, str]:
    return prefill.prefill(text, extractor.entities(text), questions[case_type])


# --- messages that already answer the first question -------------------------------------------


@pytest.mark.parametrize(
    ("case_type", "text", "expected"),
    [
        (
            "refund_return",
            "i want to return the jacket i bought, it's the wrong size. order AC-2291734",
            {"order_number": "AC-2291734", "return_request": RETURN_FOR_REFUND, "return_reason": "jacket — wrong size"},
        ),
        (
            "billing",
            "i was charged twice, £49.99 on 3 March",
            {"billing_problem": BILLING_CHARGED_TWICE, "charge_details": "£49.99 on 3 March"},
        ),
        (
            "account_access",
            "can't log in to my account, my email is ann@example.com",
            {"account_email": "ann@example.com", "access_problem": ACCESS_CANNOT_LOG_IN},
        ),
        (
            "product_issue",
            "my kettle stopped working",
            {"product_name": "kettle", "issue_description": "stopped working"},
        ),
        (
            "product_question",
            "wats the cost for mattress",
            {"product_name": "mattress", "question_detail": "wats the cost for mattress"},
        ),
        (
            "order_status",
            "parcel says delivered but it isn't here, order 48213907",
            {"order_number": "48213907", "delivery_problem": DELIVERY_SAYS_DELIVERED},
        ),
    ],
)
def test_the_examples_of_the_issue_are_filled(
    extractor: Extractor, questions: Dict[str, List[str]], case_type: str, text: str, expected: Dict[str, str]
) -> None:
    assert _prefill(extractor, questions, case_type, text) == expected


# --- many real-looking messages, per case type ----------------------------------------------

# One row per phrasing: the rows look alike by design (case type, message, what it fills).
CASES = [
    # order status
    ("order_status", "where is my parcel?? ordered 2 weeks ago and still nothing", {"delivery_problem": DELIVERY_LATE}),
    (
        "order_status",
        "tracking hasn't updated in 5 days #AC-2291734",
        {"order_number": "AC-2291734", "delivery_problem": DELIVERY_TRACKING_STUCK},
    ),
    ("order_status", "parcel stuck at the depot since monday", {"delivery_problem": DELIVERY_TRACKING_STUCK}),
    (
        "order_status",
        "it says it was delivered yesterday but i never got it",
        {"delivery_problem": DELIVERY_SAYS_DELIVERED},
    ),
    (
        "order_status",
        "my order 48213907 still hasn't arrived",
        {"order_number": "48213907", "delivery_problem": DELIVERY_LATE},
    ),
    ("order_status", "@115858 where's my order, it's late", {"delivery_problem": DELIVERY_LATE}),
    ("order_status", "where is my order?", {}),
    ("order_status", "it says delivered", {}),
    ("order_status", "what if it's late, can i still cancel?", {}),
    ("order_status", "they charged me a late fee", {}),
    ("order_status", "the game is still not working after the update", {}),
    ("order_status", "orders 48213907 and 48213908 haven't arrived", {"delivery_problem": DELIVERY_LATE}),
    ("order_status", "hi @northwind_help can you check 48213907 for me", {"order_number": "48213907"}),
    # A bare number with nothing about an order may be a postcode or a phone number.
    ("product_issue", "Internet down, again. 7th time this month. 95608", {}),
    ("change_order", "please text me at 5632156987", {}),
    ("order_status", "cable down at zip code 33026. What's the status??", {}),
    ("cancel_order", "the driver Suresh: 9958520468 made me cancel the booking", {}),
    ("cancel_order", "please cancel bc if it comes on friday nobody is home", {}),
    ("order_status", "Order# 3632693-6196346 never arrived", {"delivery_problem": DELIVERY_LATE}),
    # change order
    ("change_order", "i need to change the delivery address on my order 48213907", {"order_number": "48213907"}),
    (
        "change_order",
        "can you change the address on order 48213907 to 12 Baker Street, London NW1",
        {
            "order_number": "48213907",
            "requested_change": "change the address on order 48213907 to 12 Baker Street, London NW1",
        },
    ),
    ("change_order", "my new address is 5 High Road, Leeds", {"requested_change": "new address is 5 High Road, Leeds"}),
    (
        "change_order",
        "can i switch the size to a large please",
        {"requested_change": "switch the size to a large please"},
    ),
    ("change_order", "I want to change my order", {}),
    ("change_order", "how do i change the address for my order", {}),
    # cancel order
    (
        "cancel_order",
        "cancel my order 48213907 because i ordered the wrong size",
        {"order_number": "48213907", "cancel_reason": "i ordered the wrong size"},
    ),
    ("cancel_order", "please cancel, found it cheaper elsewhere", {"cancel_reason": "found it cheaper elsewhere"}),
    ("cancel_order", "cancel pls i changed my mind", {"cancel_reason": "changed my mind"}),
    ("cancel_order", "cancel my order pls", {}),
    ("cancel_order", "i can't cancel because the button is greyed out", {}),
    ("cancel_order", "wtf is taking so long, cancel it", {"cancel_reason": "taking so long"}),
    ("cancel_order", "I want to cancel order AC-2291734 as soon as possible", {"order_number": "AC-2291734"}),
    # returns and refunds
    (
        "refund_return",
        "can i exchange these jeans for a bigger size? order #48213",
        {"order_number": "48213", "return_request": RETURN_EXCHANGE},
    ),
    (
        "refund_return",
        "where is my refund? i sent the boots back 3 weeks ago",
        {"return_request": RETURN_REFUND_STATUS},
    ),
    (
        "refund_return",
        "I returned the trainers two weeks ago and still no refund",
        {"return_request": RETURN_REFUND_STATUS},
    ),
    (
        "refund_return",
        "the dress arrived ripped, I'd like my money back",
        {"return_request": RETURN_FOR_REFUND, "return_reason": "the dress arrived ripped"},
    ),
    (
        "refund_return",
        "I'd like to send the sofa back because it doesn't fit through the door",
        {"return_request": RETURN_FOR_REFUND, "return_reason": "sofa — doesn't fit through the door"},
    ),
    (
        "refund_return",
        "I want a replacement, the kettle is leaking",
        {"return_request": RETURN_EXCHANGE, "return_reason": "the kettle is leaking"},
    ),
    (
        "refund_return",
        "want to return these shoes as they're too small",
        {"return_request": RETURN_FOR_REFUND, "return_reason": "shoes — too small"},
    ),
    ("refund_return", "i want to return it", {"return_request": RETURN_FOR_REFUND}),
    (
        "refund_return",
        "want to send these back, I do not like them https://t.co/SBV2atg8o0",
        {"return_request": RETURN_FOR_REFUND, "return_reason": "I do not like them"},
    ),
    (
        "refund_return",
        "refund please, order 48213907",
        {"order_number": "48213907", "return_request": RETURN_FOR_REFUND},
    ),
    ("refund_return", "I need help with a return", {}),
    ("refund_return", "my refund is the wrong amount", {}),
    ("refund_return", "can i return or exchange an item?", {}),
    ("refund_return", "what's your returns policy", {}),
    ("refund_return", "is the bus replacement still running today?", {}),
    ("refund_return", "if it doesn't fit can i return it?", {}),
    ("refund_return", "i'd like a refund or an exchange for the coat", {}),
    # billing
    (
        "billing",
        "my card got declined at checkout but the money left my account",
        {"billing_problem": BILLING_PAYMENT_FAILED},
    ),
    ("billing", "can you send me a VAT invoice for order AC-1234567", {"billing_problem": BILLING_INVOICE}),
    ("billing", "the invoice is wrong, it says £120", {"charge_details": "£120"}),
    (
        "billing",
        "there's an extra fee of $4.99 on my bill from yesterday",
        {"billing_problem": BILLING_UNEXPECTED_FEE, "charge_details": "$4.99 yesterday"},
    ),
    ("billing", "I was charged 2x for the same order", {"billing_problem": BILLING_CHARGED_TWICE}),
    (
        "billing",
        "double charged!! 49.99 EUR taken twice on 03/03/2026, email me at Sam.C@shop.co.uk",
        {
            "billing_problem": BILLING_CHARGED_TWICE,
            "charge_details": "49.99 EUR on 03/03/2026",
            "account_email": "sam.c@shop.co.uk",
        },
    ),
    ("billing", "got charged 30 quid last week for nothing", {"charge_details": "30 quid last week"}),
    ("billing", "i was charged twice yesterday", {"billing_problem": BILLING_CHARGED_TWICE}),
    ("billing", "why is my payment still pending", {}),
    ("billing", "$3 bowls and they aren't charging for double meat", {"charge_details": "$3"}),
    # account access
    ("account_access", "forgot my password and the reset email never comes", {"access_problem": ACCESS_PASSWORD_RESET}),
    ("account_access", "my account has been locked after too many attempts", {"access_problem": ACCESS_LOCKED}),
    ("account_access", "I'm not getting the verification code", {"access_problem": ACCESS_NO_CODE}),
    ("account_access", "i can't log in, it says my account is suspended", {"access_problem": ACCESS_LOCKED}),
    (
        "account_access",
        "having trouble logging in with j.doe@gmail.com",
        {"account_email": "j.doe@gmail.com", "access_problem": ACCESS_CANNOT_LOG_IN},
    ),
    ("account_access", "how do i change my email address", {}),
    ("account_access", "I cannot get in contact with customer service any other way", {}),
    ("account_access", "i have two emails, a@example.com and b@example.com", {}),
    # product faults
    (
        "product_issue",
        "the app keeps crashing on my iPhone",
        {"product_name": "app", "issue_description": "keeps crashing on my iPhone"},
    ),
    ("product_issue", "contactless not working", {"product_name": "contactless", "issue_description": "not working"}),
    ("product_issue", "should I reinstall the payment app?", {"product_name": "payment app"}),
    (
        "product_issue",
        "my headphones stopped charging",
        {"product_name": "headphones", "issue_description": "stopped charging"},
    ),
    (
        "product_issue",
        "the zip on my jacket broke",
        {"product_name": "jacket", "issue_description": "the zip on my jacket broke"},
    ),
    (
        "product_issue",
        "my laptop won't turn on after the windows 11 update",
        {"product_name": "laptop", "issue_description": "won't turn on after the windows 11 update"},
    ),
    (
        "product_issue",
        "the washing machine is leaking water everywhere, order 7781234",
        {"product_name": "washing machine", "issue_description": "leaking water everywhere", "order_number": "7781234"},
    ),
    (
        "product_issue",
        "payment app freezes at login. I'm on android",
        {"product_name": "payment app", "issue_description": "freezes at login (on android)"},
    ),
    ("product_issue", "MY KETTLE IS BROKEN", {"product_name": "kettle", "issue_description": "BROKEN"}),
    ("product_issue", "is this a known issue?", {}),
    (
        "product_issue",
        "if you could help that would be great, my toaster is broken",
        {"product_name": "toaster", "issue_description": "broken"},
    ),
    # product questions
    ("product_question", "Queen size", {"question_detail": "Queen size"}),
    (
        "product_question",
        "how can I check it's an original product",
        {"question_detail": "how can I check it's an original product"},
    ),
    ("product_question", "expiry of product", {"question_detail": "expiry of product"}),
    (
        "product_question",
        "do you have the trail runner in size 44?",
        {"product_name": "trail runner", "question_detail": "do you have the trail runner in size 44?"},
    ),
    (
        "product_question",
        "is the sofa bed available in grey?",
        {"product_name": "sofa bed", "question_detail": "is the sofa bed available in grey?"},
    ),
    ("product_question", "moisturiser", {"product_name": "moisturiser"}),
    ("product_question", "hello", {}),
    (
        "product_question",
        # Two nouns of the table: which product it is about is asked.
        "@NorthwindHelp is the blender dishwasher safe? https://t.co/abc123",
        {"question_detail": "is the blender dishwasher safe?"},
    ),
    # complaints
    (
        "complaint",
        "your driver threw my parcel over the fence, I want an apology and a refund",
        {"desired_outcome": "an apology and a refund"},
    ),
    ("complaint", "your service is a joke, nobody ever answers", {}),
    (
        "complaint",
        "@XboxSupport it freezes all the time. I want my money back unless you can fix it https://t.co/x1",
        {"desired_outcome": "my money back"},
    ),
    ("complaint", "I emailed four times about a broken table and never heard back", {}),
]


@pytest.mark.parametrize(("case_type", "text", "expected"), CASES)
def test_what_a_message_says_fills_its_questions(
    extractor: Extractor, questions: Dict[str, List[str]], case_type: str, text: str, expected: Dict[str, str]
) -> None:
    assert _prefill(extractor, questions, case_type, text) == expected


def test_only_the_questions_still_open_are_filled(extractor: Extractor) -> None:
    text = "i want to return the jacket i bought, it's the wrong size. order AC-2291734"
    entities = extractor.entities(text)
    assert prefill.prefill(text, entities, ["return_reason"]) == {"return_reason": "jacket — wrong size"}
    assert prefill.prefill(text, entities, []) == {}


# --- the entities the readers rely on -------------------------------------------------------


def test_every_entity_prefill_reads_is_trained(extractor: Extractor) -> None:
    """RegexEntityExtractor drops a pattern no training example annotates: none may be dropped."""
    needed = {
        ENTITY_ORDER_NUMBER, ENTITY_EMAIL, prefill.ENTITY_AMOUNT, prefill.ENTITY_DATE, prefill.ENTITY_PRODUCT,
        prefill.ENTITY_DEVICE,
    }  # fmt: skip
    assert needed <= extractor.patterns


def _found(extractor: Extractor, text: str, entity: str) -> List[str]:
    return [found["value"] for found in extractor.entities(text) if found["entity"] == entity]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order AC-2291734", ["AC-2291734"]),
        ("it's #48213", ["#48213"]),
        ("@115858 hello??", []),
        ("thanks @AB123456", []),
        ("my email is ann12345@example.com", []),
        ("12345@example.com is my login", []),
    ],
)
def test_order_numbers_are_not_handles_or_email_addresses(extractor: Extractor, text: str, expected: List[str]) -> None:
    assert _found(extractor, text, "order_number") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("charged £49.99 on 3 March", ["£49.99"]),
        ("a charge of £1,299.00", ["£1,299.00"]),
        ("49.99 EUR twice", ["49.99 EUR"]),
        ("they took 20 quid", ["20 quid"]),
        ("$20 fee", ["$20"]),
        ("charged 12.50 yesterday", ["12.50"]),
        ("order 48213907, 2 items", []),
        ("size 10 in the 3 pack", []),
    ],
)
def test_amounts(extractor: Extractor, text: str, expected: List[str]) -> None:
    assert _found(extractor, text, prefill.ENTITY_AMOUNT) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on 3 March", ["3 March"]),
        ("the 3rd of march 2026", ["3rd of march 2026"]),
        ("March 3rd", ["March 3rd"]),
        ("on 03/03/2026", ["03/03/2026"]),
        ("on 2026-03-03", ["2026-03-03"]),
        ("it was yesterday", ["yesterday"]),
        ("last friday", ["last friday"]),
        ("two days ago", ["two days ago"]),
        ("may 2 of them be sent", []),
        ("£49.99 charged", []),
    ],
)
def test_dates(extractor: Extractor, text: str, expected: List[str]) -> None:
    assert _found(extractor, text, prefill.ENTITY_DATE) == expected


def test_the_longest_product_wins(extractor: Extractor) -> None:
    text = "the phone case i ordered for my iPhone is cracked"
    assert prefill.product_name(prefill.Message.read(text, extractor.entities(text))) == "phone case"


def _lookup_tables() -> List[Dict[str, Any]]:
    data = yaml.safe_load((ROOT / "data" / "nlu" / "lookups.yml").read_text())["nlu"]
    return [item for item in data if "lookup" in item]


def test_in_each_lookup_table_a_longer_entry_comes_before_one_it_starts_with() -> None:
    """The table is one alternation and the first entry that matches wins: "phone" would hide "phone case"."""
    misplaced = []
    for table in _lookup_tables():
        entries = [line[2:].strip() for line in table["examples"].splitlines() if line.startswith("- ")]
        for index, entry in enumerate(entries):
            shadowed = [later for later in entries[index + 1 :] if re.match(rf"{re.escape(entry)}\b", later, re.I)]
            misplaced += [f"{table['lookup']}: '{later}' after '{entry}'" for later in shadowed]
    assert misplaced == []


# --- without Rasa: the reading of entities ---------------------------------------------------


def entity(name: str, text: str, value: str) -> Dict[str, Any]:
    start = text.index(value)
    return {"entity": name, "value": value, "start": start, "end": start + len(value)}


def test_two_different_order_numbers_fill_neither() -> None:
    text = "order 48213907 or maybe 48213908"
    entities = [entity("order_number", text, "48213907"), entity("order_number", text, "48213908")]
    assert prefill.prefill(text, entities, ["order_number"]) == {}


def test_the_same_order_number_twice_is_one() -> None:
    text = "order #48213907 (48213907)"
    entities = [entity("order_number", text, "#48213907"), {"entity": "order_number", "value": "48213907"}]
    assert prefill.prefill(text, entities, ["order_number"]) == {"order_number": "48213907"}


def test_an_order_number_next_to_an_at_sign_is_ignored() -> None:
    """A model trained before the regex learned about '@' must not file a handle as an order."""
    text = "@115858 where is it"
    assert prefill.prefill(text, [entity("order_number", text, "115858")], ["order_number"]) == {}


def test_a_button_payload_answers_nothing() -> None:
    assert prefill.prefill("/order_status", [], ["order_number", "delivery_problem"]) == {}
    assert prefill.prefill(None, [], ["order_number"]) == {}


def test_every_reader_is_for_an_answer_slot() -> None:
    assert set(prefill.READERS) <= set(ANSWER_SLOTS)


def test_every_button_answer_is_a_button_payload_of_its_question(domain: Dict[str, Any]) -> None:
    """Prefilled answers read exactly like pressed buttons."""
    for slot, answers in prefill.BUTTON_ANSWERS.items():
        payloads = {
            button["payload"]
            for variation in domain["responses"][f"utter_ask_{slot}"]
            for button in variation.get("buttons", [])
        }
        assert set(answers) <= payloads, slot


def test_every_case_type_is_read_only_for_its_own_questions(questions: Dict[str, List[str]]) -> None:
    """A product noun in a billing message fills no product question: billing has none."""
    text = "charged twice for the kettle"
    entities = [entity("product", text, "kettle")]
    assert set(prefill.prefill(text, entities, questions["billing"])) == {"billing_problem"}
