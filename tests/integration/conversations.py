"""Whole conversations, first message to hand-off, that the REST and scale-out tests send (each ends in one case).

Each script: the ``metadata`` sent with every message (None: none), the customer's
``messages``, the ``case_type`` of the case it opens, the ``answers`` the case holds and the
questions (``asks``, by answer slot) the assistant asks on the way.
"""

from __future__ import annotations

from typing import Any, Dict, List

# Each conversation: what the customer sends, the case it must end in, and which
# questions the assistant asks on the way (by answer slot), in order. What the first
# message already says is never asked (bot/prefill.py).
CONVERSATIONS: Dict[str, Dict[str, Any]] = {
    "order-1": {
        "metadata": {"customer_name": "Maria Keller"},
        # "still nothing" two weeks on: the delivery is late, so only the order number is asked.
        "messages": ["where is my parcel?? ordered 2 weeks ago and still nothing", "AC-2291734", "/affirm"],
        "case_type": "order_status",
        "answers": {"order_number": "AC-2291734", "delivery_problem": "It's late"},
        "asks": ["order_number"],
    },
    "change-1": {
        "metadata": {"first_name": "Tom"},
        "messages": [
            "i need to change the delivery address on my order 48213907", "new address is 12 Baker St NW1", "/affirm"
        ],  # fmt: skip
        "case_type": "change_order",
        "answers": {"order_number": "48213907", "requested_change": "new address is 12 Baker St NW1"},
        "asks": ["requested_change"],
    },
    "billing-1": {
        "metadata": None,
        # "charged twice" answers what went wrong; the customer asks for a person at the next question.
        "messages": ["i was charged twice for my order", "talk to a human please", "/affirm"],
        "case_type": "billing",
        "answers": {"billing_problem": "I was charged twice"},
        "asks": ["charge_details"],
    },
    "complaint-1": {
        "metadata": {"customer_name": "Sam"},
        "messages": [
            "your service is a joke, nobody ever answers",
            "I emailed four times about a broken table and never heard back",
            "a refund and an apology",
            "/affirm",
        ],
        "case_type": "complaint",
        "answers": {
            "complaint_detail": "I emailed four times about a broken table and never heard back",
            "desired_outcome": "a refund and an apology",
        },
        "asks": ["complaint_detail", "desired_outcome"],
    },
    "unclear-1": {
        "metadata": None,
        "messages": ["blorp the frobnicator", "/refund_return", "#48213", "Exchange it", "wrong size", "/affirm"],
        "case_type": "refund_return",
        "answers": {"order_number": "48213", "return_request": "Exchange it", "return_reason": "wrong size"},
        "asks": ["order_number", "return_request", "return_reason"],
    },
    "question-1": {
        "metadata": None,
        "messages": ["do you have the trail runner in size 44?", "/affirm"],
        "case_type": "product_question",
        "answers": {"product_name": "trail runner", "question_detail": "do you have the trail runner in size 44?"},
        "asks": [],
    },
    # --- the first message already answers ("never ask what the customer already said")
    "return-said": {
        "metadata": None,
        "messages": ["i want to return the jacket i bought, it's the wrong size. order AC-2291734", "/affirm"],
        "case_type": "refund_return",
        "answers": {
            "order_number": "AC-2291734",
            "return_request": "Return it for a refund",
            "return_reason": "jacket — wrong size",
        },
        "asks": [],
    },
    "charge-said": {
        "metadata": None,
        "messages": ["i was charged twice, £49.99 on 3 March", "ann@example.com", "/affirm"],
        "case_type": "billing",
        "answers": {
            "billing_problem": "I was charged twice",
            "charge_details": "£49.99 on 3 March",
            "account_email": "ann@example.com",
        },
        "asks": ["account_email"],
    },
    "login-said": {
        "metadata": None,
        "messages": ["can't log in to my account, my email is ann@example.com", "/affirm"],
        "case_type": "account_access",
        "answers": {"account_email": "ann@example.com", "access_problem": "I can't log in"},
        "asks": [],
    },
    "kettle-said": {
        "metadata": None,
        "messages": ["my kettle stopped working", "7781234", "/affirm"],
        "case_type": "product_issue",
        "answers": {"product_name": "kettle", "issue_description": "stopped working", "order_number": "7781234"},
        "asks": ["order_number"],
    },
    "mattress-said": {
        "metadata": None,
        "messages": ["wats the cost for mattress", "/affirm"],
        "case_type": "product_question",
        "answers": {"product_name": "mattress", "question_detail": "wats the cost for mattress"},
        "asks": [],
    },
    "delivered-said": {
        "metadata": None,
        "messages": ["parcel says delivered but it isn't here, order 48213907", "/affirm"],
        "case_type": "order_status",
        "answers": {"order_number": "48213907", "delivery_problem": "Says delivered, but it isn't here"},
        "asks": [],
    },
    # A later answer fills the questions not asked yet too.
    "later-said": {
        "metadata": None,
        "messages": [
            "I need help with a return",
            "AC-2291734, the jeans are too small so i'd like to swap them for a bigger size",
            "/affirm",
        ],
        "case_type": "refund_return",
        "answers": {
            "order_number": "AC-2291734",
            "return_request": "Exchange it",
            "return_reason": "the jeans are too small",
        },
        "asks": ["order_number"],
    },
    # A social handle is not an order number: it is asked for.
    "handle-said": {
        "metadata": None,
        "messages": ["@115858 my parcel still hasn't arrived", "48213907", "/affirm"],
        "case_type": "order_status",
        "answers": {"order_number": "48213907", "delivery_problem": "It's late"},
        "asks": ["order_number"],
    },
}


def scripts(*senders: str) -> List[Dict[str, Any]]:
    """Return the conversations of ``senders`` in that order, each with ``metadata`` always a mapping ({} for None)."""
    return [{**CONVERSATIONS[sender], "metadata": CONVERSATIONS[sender]["metadata"] or {}} for sender in senders]
