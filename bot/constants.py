"""Names shared by the domain, the actions and the case store.

Every intent, slot, action and status that code refers to is named here once, so a
rename in ``domain.yml`` is a one-line change in code too.
"""

from __future__ import annotations

# --- intents -------------------------------------------------------------------
INTENT_GREET = "greet"
INTENT_GOODBYE = "goodbye"
INTENT_THANK = "thank"
INTENT_AFFIRM = "affirm"
INTENT_DENY = "deny"
INTENT_BOT_CHALLENGE = "bot_challenge"
INTENT_REQUEST_HUMAN = "request_human"
INTENT_SOMETHING_ELSE = "something_else"
INTENT_ASK_RESPONSE_TIME = "ask_response_time"
INTENT_COMPLIMENT = "compliment"
INTENT_COMPLAINT = "complaint"
INTENT_NLU_FALLBACK = "nlu_fallback"
# Not about the brand's service: answered plainly, no case starts.
INTENT_OUT_OF_SCOPE = "out_of_scope"

# Case types: each is an intent, has a form named ``<case type>_form`` and an
# acknowledgement response ``utter_ack_<case type>``.
CASE_TYPES: tuple[str, ...] = (
    "order_status",
    "change_order",
    "cancel_order",
    "refund_return",
    "billing",
    "account_access",
    "product_issue",
    "product_question",
    "complaint",
)
# The case type used when the customer asks for a person before saying what about,
# or when the assistant could not tell what the message is about.
CASE_TYPE_GENERAL = "general"

SMALL_TALK_INTENTS: tuple[str, ...] = (
    INTENT_GREET,
    INTENT_GOODBYE,
    INTENT_THANK,
    INTENT_BOT_CHALLENGE,
    INTENT_COMPLIMENT,
    INTENT_OUT_OF_SCOPE,
)

# --- slots ---------------------------------------------------------------------
SLOT_CASE_TYPE = "case_type"
SLOT_CUSTOMER_NAME = "customer_name"
SLOT_CORRECTION = "case_correction"
SLOT_CASE_ADDITIONS = "case_additions"
SLOT_INVALID_ATTEMPTS = "invalid_attempts"
SLOT_UNCLEAR_TWICE = "unclear_twice"
SLOT_CASE_ID = "case_id"
SLOT_REQUESTED = "requested_slot"
# The customer's language (ISO 639-1) and, when their latest message was not understood as
# written, why (domain/languages.yml).
SLOT_LANGUAGE = "language"
SLOT_LANGUAGE_NOTE = "language_note"

# Answer slots, in the order they are summed up to the customer. (Like the intents and
# case types above: one name a line, so a rename is a one-line change. The lists look
# alike because they are lists of names; there is no logic in them to share.)
ANSWER_SLOTS: tuple[str, ...] = (
    "order_number",
    "delivery_problem",
    "requested_change",
    "cancel_reason",
    "return_request",
    "return_reason",
    "billing_problem",
    "charge_details",
    "account_email",
    "access_problem",
    "product_name",
    "issue_description",
    "question_detail",
    "complaint_detail",
    "desired_outcome",
)

# --- entities ------------------------------------------------------------------
ENTITY_ORDER_NUMBER = "order_number"
ENTITY_EMAIL = "email"

# --- actions -------------------------------------------------------------------
ACTION_ACKNOWLEDGE = "action_acknowledge"
ACTION_DID_YOU_MEAN = "action_did_you_mean"
ACTION_SUMMARIZE = "action_summarize_case"
ACTION_HANDOFF = "action_handoff"
ACTION_TELL_RESPONSE_TIME = "action_tell_response_time"
ACTION_ADD_DETAIL = "action_add_detail"
ACTION_FALLBACK = "action_fallback"
ACTION_SET_LANGUAGE = "action_set_language"
RESPONSE_ASK_DESCRIBE = "utter_ask_describe"
RESPONSE_GREETING = "utter_greeting"
RESPONSE_GREETING_NAMED = "utter_greeting_named"
# The greeting, which a customer must never read twice in one conversation: the channels'
# reply records send it at most once per customer and session (``bot.channels.base``).
GREETING_RESPONSES: frozenset[str] = frozenset({RESPONSE_GREETING, RESPONSE_GREETING_NAMED})
# Metadata of a customer message the channel greeted before Rasa read it ({"response", "text",
# "language"}, ``bot.channels.edge``), and of the dialogue's record of that greeting (True):
# recorded in the conversation, not sent again.
GREETED_AT_EDGE = "greeted_at_edge"
RESPONSE_LANGUAGE_UNCLEAR = "utter_language_unclear"
ACTION_LISTEN = "action_listen"

# --- channels ------------------------------------------------------------------
# The channel a message is filed under when its input channel is not known.
DEFAULT_CHANNEL = "rest"

# Where a case began, when not in a private conversation (``Case.metadata["origin"]``).
ORIGIN_PUBLIC_POST = "public post"

# --- case statuses -------------------------------------------------------------
STATUS_WAITING = "waiting"
STATUS_CLAIMED = "claimed"
STATUS_RESOLVED = "resolved"
STATUS_CLOSED = "closed"
OPEN_STATUSES: tuple[str, ...] = (STATUS_WAITING, STATUS_CLAIMED)

# --- priorities, lowest first --------------------------------------------------
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")

# --- metadata keys a channel may send about the customer ------------------------
# Connectors normalise to ``customer_name``; the others are what common channels
# (and Rasa's own connectors) already send.
NAME_METADATA_KEYS: tuple[str, ...] = (
    "customer_name",
    "first_name",
    "name",
    "display_name",
    "username",
)
LANGUAGE_METADATA_KEYS: tuple[str, ...] = ("language", "language_code", "locale")
# A message that was a public post (an X mention, a Facebook or Instagram comment) carries
# {"public_post": {"platform", "id", "text", "url", "author", "hostile"}} (``bot.channels.public_posts``).
PUBLIC_POST_KEY = "public_post"


def form_name(case_type: str) -> str:
    """Return the form that asks the clarifying questions of a case type."""
    return f"{case_type}_form"


def priority_rank(priority: str) -> int:
    """Return the position of ``priority`` in ``PRIORITIES`` (higher is more urgent)."""
    return PRIORITIES.index(priority)


# Responses the actions send by name (rather than through a rule), so Rasa's validator
# cannot see them used. ``python -m bot data check`` verifies each exists.
RESPONSES_SENT_BY_ACTIONS: tuple[str, ...] = (
    RESPONSE_GREETING,
    RESPONSE_GREETING_NAMED,
    "utter_language_unclear",
    "utter_ack_upset",
    "utter_ack_mixed_feelings",
    "utter_did_you_mean",
    "utter_something_else_button",
    "utter_unclear_pass_on",
    "utter_invalid_order_number",
    "utter_invalid_email",
    "utter_answer_too_short",
    "utter_summary",
    "utter_detail_added",
    "utter_handoff",
    "utter_handoff_named",
    "utter_response_time",
    "utter_added_to_case",
)
# Families of responses the actions send by pattern, one per intent or case type.
ACK_RESPONSE_PREFIX = "utter_ack_"
LABEL_RESPONSE_PREFIX = "utter_label_"
ASK_RESPONSE_PREFIX = "utter_ask_"
# Pieces of sentences composed in code in the customer's language (domain/languages.yml):
# the promise, the summary, and how each answer is named in it.
COMPOSED_RESPONSE_PREFIXES: tuple[str, ...] = ("utter_promise_", "utter_summary_", "utter_answer_label_")
# Responses the agent desk sends to customers by itself, never Rasa (domain/desk.yml,
# read by bot.desk.customer_texts): the watchdog's messages and the late-pickup apology.
DESK_RESPONSE_PREFIX = "utter_watchdog_"
RESPONSE_WATCHDOG_UPDATE = "utter_watchdog_update"
RESPONSE_WATCHDOG_UPDATE_NAMED = "utter_watchdog_update_named"
RESPONSE_WATCHDOG_CHECKIN = "utter_watchdog_checkin"
RESPONSE_WATCHDOG_CHECKIN_NAMED = "utter_watchdog_checkin_named"
RESPONSE_WATCHDOG_CLOSE = "utter_watchdog_close"
RESPONSE_WATCHDOG_APOLOGY = "utter_watchdog_apology"
RESPONSE_WATCHDOG_APOLOGY_NAMED = "utter_watchdog_apology_named"
# Why a promise slipped, one response per reason (bot.desk.customer_texts.REASONS): as the
# new estimate says it, and as the apology says it afterwards.
WATCHDOG_REASON_PREFIX = "utter_watchdog_reason_"
APOLOGY_REASON_PREFIX = "utter_watchdog_apology_reason_"
# Why a customer needs a new estimate (stored on the case as ``delay_reason``); a holiday
# is said instead of "closed" when the brand is closed for one.
REASON_CLOSED = "closed"
REASON_CLOSING = "closing"
REASON_BUSY = "busy"
REASON_SLOW = "slow"
REASON_HOLIDAY = "holiday"
DELAY_REASONS: tuple[str, ...] = (REASON_CLOSED, REASON_CLOSING, REASON_BUSY, REASON_SLOW)
DESK_RESPONSES: tuple[str, ...] = (
    RESPONSE_WATCHDOG_UPDATE, RESPONSE_WATCHDOG_UPDATE_NAMED, RESPONSE_WATCHDOG_CHECKIN,
    RESPONSE_WATCHDOG_CHECKIN_NAMED, RESPONSE_WATCHDOG_CLOSE, RESPONSE_WATCHDOG_APOLOGY,
    RESPONSE_WATCHDOG_APOLOGY_NAMED,
    *(f"{WATCHDOG_REASON_PREFIX}{reason}" for reason in (*DELAY_REASONS, REASON_HOLIDAY)),
    *(f"{APOLOGY_REASON_PREFIX}{reason}" for reason in DELAY_REASONS),
)  # fmt: skip
