"""Whole conversations, first message to hand-off, that the REST and scale-out tests send (each ends in one case).

Each script: the ``metadata`` sent with every message (None: none), the customer's
``messages``, the ``case_type`` of the case it opens and the ``answers`` the case holds.
"""

from __future__ import annotations

from typing import Any, Dict, List

CONVERSATIONS: Dict[str, Dict[str, Any]] = {
    "order-1": {
        "metadata": {"customer_name": "Maria Keller"},
        "messages": ["where is my parcel?? ordered 2 weeks ago and still nothing", "AC-2291734", "It's late", "/affirm"],
        "case_type": "order_status",
        "answers": {"order_number": "AC-2291734", "delivery_problem": "It's late"},
    },
    "change-1": {
        "metadata": {"first_name": "Tom"},
        "messages": ["i need to change the delivery address on my order 48213907", "new address is 12 Baker St NW1", "/affirm"],
        "case_type": "change_order",
        "answers": {"order_number": "48213907", "requested_change": "new address is 12 Baker St NW1"},
    },
    "billing-1": {
        "metadata": None,
        "messages": ["i was charged twice for my order", "I was charged twice", "talk to a human please", "/affirm"],
        "case_type": "billing",
        "answers": {"billing_problem": "I was charged twice"},
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
    },
    "unclear-1": {
        "metadata": None,
        "messages": ["blorp the frobnicator", "/refund_return", "#48213", "Exchange it", "wrong size", "/affirm"],
        "case_type": "refund_return",
        "answers": {"order_number": "48213", "return_request": "Exchange it", "return_reason": "wrong size"},
    },
    "question-1": {
        "metadata": None,
        "messages": ["do you have the trail runner in size 44?", "Trail runner 2", "is it waterproof?", "/affirm"],
        "case_type": "product_question",
        "answers": {"product_name": "Trail runner 2", "question_detail": "is it waterproof?"},
    },
}


def scripts(*senders: str) -> List[Dict[str, Any]]:
    """Return the conversations of ``senders`` in that order, each with ``metadata`` always a mapping ({} for None)."""
    return [{**CONVERSATIONS[sender], "metadata": CONVERSATIONS[sender]["metadata"] or {}} for sender in senders]
