"""Block Kit for the desk: the case card, thread notices, the queue and the Home tab.

Pure functions of a case and the time; every piece of customer text is escaped
(``bot.desk.text.escape``) so nothing a customer writes can mention, link or ping.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.constants import PUBLIC_POST_KEY, STATUS_CLAIMED, STATUS_CLOSED, STATUS_RESOLVED, STATUS_WAITING
from bot.desk import messages
from bot.desk.text import clip, countdown_words, duration_words, escape, quote
from bot.i18n import NAMES

if TYPE_CHECKING:
    from bot.cases import Case

ACTION_CLAIM = "desk_claim"
ACTION_REASSIGN = "desk_reassign"
ACTION_RESOLVE = "desk_resolve"
REASSIGN_VIEW = "desk_reassign_view"
REASSIGN_BLOCK = "desk_reassign_to"
REASSIGN_SELECT = "desk_reassign_user"
SECTION_LIMIT = 3000
TRANSCRIPT_LINES = 6
QUEUE_LIMIT = 40
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")
_SLACK_GROUP = re.compile(r"S[A-Z0-9]{2,}")
_SPEAKERS = {"customer": "Customer", "bot": "Assistant", "agent": "Agent", "system": "System"}


def user_ref(user_id: str | None) -> str:
    """Return a mention of a Slack user id, or the id escaped if it is not one."""
    if user_id and _SLACK_USER.fullmatch(user_id):
        return f"<@{user_id}>"
    return escape(user_id or "nobody")


def oncall_ref(oncall: str | None) -> str:
    """Return a mention of the on-call person (``U...``) or user group (``S...``); "" for none."""
    if oncall and _SLACK_GROUP.fullmatch(oncall):
        return f"<!subteam^{oncall}>"
    if oncall and _SLACK_USER.fullmatch(oncall):
        return f"<@{oncall}>"
    return ""


def label(case_type: str) -> str:
    """Return a case type for people: ``refund_return`` -> ``Refund return``."""
    return case_type.replace("_", " ").capitalize()


def customer_label(case: Case) -> str:
    """Return the customer's name (or id), channel and handle on the platform if known, escaped."""
    who = case.customer_name or case.sender_id
    handle = case.metadata.get("customer_handle") if isinstance(case.metadata, Mapping) else None
    return f"{escape(who)} ({escape(case.channel)})" + (f" · {escape(str(handle))}" if handle else "")


def priority_line(case: Case) -> str:
    """Return the priority as it should stand out: urgent and complaints loudest."""
    parts = {
        "urgent": ":rotating_light: *URGENT*",
        "high": ":warning: *High priority*",
        "normal": "Normal priority",
        "low": "Low priority",
    }
    line = parts.get(case.priority, escape(case.priority))
    if case.case_type == "complaint" or case.complaint_score >= 0.5:
        line += f" · :anger: *Complaint* (score {case.complaint_score:.2f})"
    return line


# How each platform's public posts are named on the card.
_PLATFORM_NAMES = {"x": "X", "facebook": "Facebook", "instagram": "Instagram"}
_SAFE_LINK = re.compile(r"https://[^\s<>|]+")


def public_post_section(case: Case) -> str | None:
    """Return the card's line for a case that began as a public post (who saw what, and where), else None."""
    post = case.metadata.get(PUBLIC_POST_KEY) if isinstance(case.metadata, Mapping) else None
    if not isinstance(post, Mapping):
        return None
    platform = str(post.get("platform") or "")
    where = _PLATFORM_NAMES.get(platform, escape(platform) or "a public page")
    url = str(post.get("url") or "")
    link = f" · <{url}|open the post>" if _SAFE_LINK.fullmatch(url) else ""
    hostile = " · :anger: hostile" if post.get("hostile") is True else ""
    said = quote(escape(clip(str(post.get("text") or ""), 500)))
    return (f":loudspeaker: *Started as a public post on {where}*{hostile}{link}\n"
            f"Answered in public with an invitation to a private message; reply here as usual (it goes by DM).\n{said}")


def status_line(case: Case, now: datetime) -> str:
    """Return where the case stands: waiting how long, held by whom, or resolved and how it went."""
    reopened = f" · reopened {case.reopened_count}×" if case.reopened_count else ""
    if case.status == STATUS_WAITING:
        line = f":hourglass_flowing_sand: *Waiting* for {duration_words(now - case.created_at)}{reopened}"
    elif case.status == STATUS_CLAIMED:
        since = duration_words(now - case.claimed_at) if case.claimed_at else "a while"
        line = f":raising_hand: *Claimed* by {user_ref(case.claimed_by)} {since} ago{reopened}"
    elif case.status == STATUS_RESOLVED:
        line = f":white_check_mark: *Resolved* by {user_ref(case.resolved_by or case.claimed_by)}{reopened}"
        if case.solved is True:
            line += " · customer says: solved"
        if case.rating is not None:
            line += f" · rated {case.rating}/5"
    elif case.status == STATUS_CLOSED:
        line = f":lock: *Closed*: the customer did not answer the check-in{reopened}"
    else:
        line = f"*{escape(case.status.capitalize())}*{reopened}"
    return line


def promise_line(case: Case, now: datetime, undelivered_updates: int = 0) -> str:
    """Return the promise as a countdown in words, what the customer was told, and what the watchdog did.

    ``undelivered_updates``: new estimates the customer never got (a closed messaging window);
    they are not counted as sent, and the wording in force is then not said to be what they heard.
    """
    told = "the latest estimate" if undelivered_updates else "the customer was told"
    line = (
        f":alarm_clock: Promise {countdown_words(case.promised_by - now)} "
        f"({told} “{escape(clip(case.promise_wording, 200))}”)"
    )
    sent = case.promise_updates - undelivered_updates
    if sent > 0:
        times = "once" if sent == 1 else f"{sent} times"
        line += f" · new estimate sent {times}"
    if undelivered_updates:
        line += f" · :no_entry: {undelivered_updates} new estimate(s) not delivered (outside the platform's window)"
    if case.status == STATUS_WAITING and case.escalated_promise is not None:
        line += " · :rotating_light: escalated to the leads"
    return line


def escalation_text(case: Case, payload: Mapping[str, Any], now: datetime) -> str:
    """Return the escalation the leads' channel gets for a case nobody has claimed (customer text escaped)."""
    mention = oncall_ref(payload.get("oncall"))
    share = float(payload.get("share") or 0)
    where = f"\nThe card is in <#{case.card_channel}>: claim it there." if case.card_channel else ""
    return (
        f":rotating_light: {mention + ' ' if mention else ''}*Case #{case.id}* is still waiting for someone: "
        f"{share:.0%} of its promise has passed and nobody has claimed it.\n"
        f"{escape(label(case.case_type))} · {priority_line(case)} · {customer_label(case)}\n"
        f":alarm_clock: Promise {countdown_words(case.promised_by - now)} "
        f"(the customer was told “{escape(clip(case.promise_wording, 200))}”){where}"
    )


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}}


def _button(text: str, action_id: str, case_id: int, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": str(case_id),
    }
    if style:
        button["style"] = style
    return button


def _previous(previous: Sequence[Case]) -> str:
    if not previous:
        return "First case of this customer."
    shown = []
    for earlier in previous[-5:]:
        extra = f", rated {earlier.rating}/5" if earlier.rating is not None else ""
        shown.append(f"#{earlier.id} {escape(label(earlier.case_type))} ({escape(earlier.status)}{extra})")
    more = f" and {len(previous) - 5} more" if len(previous) > 5 else ""
    return "Previous cases: " + ", ".join(shown) + more


def language_line(case: Case) -> str:
    """Return the case's language by name ("German (de)"), and why the assistant could not read it, if so."""
    name = NAMES.get(case.language)
    line = f"{name} ({case.language})" if name else case.language
    note = (case.metadata or {}).get("language_note")
    return f"{line} · not understood as written: {note}" if note else line


def card(
    case: Case, previous: Sequence[Case], now: datetime, *, undelivered_updates: int = 0
) -> tuple[str, list[dict[str, Any]]]:
    """Return the notification text and the blocks of a case card (``promise_line``: ``undelivered_updates``)."""
    text = f"Case #{case.id} · {case.priority} · {label(case.case_type)} · {customer_label(case)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(f"Case #{case.id} · {label(case.case_type)}", 150)}},
        _section(f"{priority_line(case)}\n{status_line(case, now)}"),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Customer*\n{clip(customer_label(case), 1900)}"},
                {"type": "mrkdwn", "text": f"*Language*\n{escape(language_line(case))}"},
            ],
        },
    ]
    public = public_post_section(case)
    if public is not None:
        blocks.append(_section(public))
    if case.status != STATUS_RESOLVED:
        blocks.append(_section(promise_line(case, now, undelivered_updates)))
    blocks.append(_section("*Summary* (confirmed by the customer)\n" + quote(escape(clip(case.summary, 2500)))))
    if case.answers:
        answers = "\n".join(f"• *{escape(label(slot))}:* {escape(clip(str(value), 300))}" for slot, value in case.answers.items())
        blocks.append(_section("*Answers*\n" + answers))
    lines = case.transcript[-TRANSCRIPT_LINES:]
    if lines:
        said = "\n".join(f"*{_SPEAKERS.get(line.who, line.who)}:* {escape(clip(line.text, 400))}" for line in lines)
        blocks.append(_section("*Last messages*\n" + said))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _previous(_earlier(case, previous))}]})
    if case.status in (STATUS_WAITING, STATUS_CLAIMED):
        buttons = []
        if case.status == STATUS_WAITING:
            buttons.append(_button("Claim", ACTION_CLAIM, case.id, "primary"))
        buttons.append(_button("Reassign", ACTION_REASSIGN, case.id))
        buttons.append(_button("Resolve", ACTION_RESOLVE, case.id, "danger" if case.status == STATUS_WAITING else None))
        blocks.append({"type": "actions", "block_id": f"desk_case_{case.id}", "elements": buttons})
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "Reply in this thread to answer the customer; start with `note:` for a note only the team sees."}
                ],
            }
        )
    return text, blocks


def _earlier(case: Case, previous: Sequence[Case]) -> list[Case]:
    wanted = set(case.previous_cases)
    return [earlier for earlier in previous if earlier.id in wanted]


def digest(text: str, blocks: Sequence[Mapping[str, Any]]) -> str:
    """Return a digest of a rendered card: a new one means the card in Slack is out of date."""
    encoded = json.dumps([text, list(blocks)], sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:32]


def customer_message(case: Case, text: str) -> str:
    """Return a customer's message as it appears in the card's thread."""
    who = escape(case.customer_name or case.sender_id)
    return f":speech_balloon: *{who}* wrote:\n{quote(escape(clip(text, 2800)))}"


def notice_text(payload: Mapping[str, Any], case: Case | None) -> str:
    """Return the wording of a thread notice (``messages.NOTICE_*``)."""
    notice = payload.get("notice")
    by = user_ref(payload.get("by"))
    if notice == messages.NOTICE_CLAIMED:
        return f":raising_hand: Claimed by {by}."
    if notice == messages.NOTICE_REASSIGNED:
        return f":arrows_counterclockwise: {by} handed the case to {user_ref(payload.get('to'))}."
    if notice == messages.NOTICE_RESOLVED:
        return f":white_check_mark: Resolved by {by}. The assistant is back and asks the customer how it went."
    if notice == messages.NOTICE_REOPENED:
        count = f" (reopened {case.reopened_count}×)" if case is not None and case.reopened_count else ""
        return (
            ":leftwards_arrow_with_hook: The customer says it is *not solved*: the case is back in the queue"
            f"{count}. Claim it to pick it up."
        )
    if notice == messages.NOTICE_SOLVED:
        return ":tada: The customer says it is solved."
    if notice == messages.NOTICE_RATED:
        return f":star: The customer rated the help {int(payload.get('rating') or 0)}/5."
    if notice == messages.NOTICE_NOT_PUSHED:
        return (
            f":information_source: The customer's channel ({escape(str(payload.get('channel')))}) cannot receive "
            "messages pushed later: the reply was recorded in the conversation only."
        )
    if notice == messages.NOTICE_NOT_DELIVERED:
        return f":x: Could not deliver a reply to the customer: {escape(str(payload.get('error')))}"
    return escape(str(payload.get("text") or notice or ""))


def queue_blocks(cases: Sequence[Case], now: datetime, title: str = "Open cases") -> list[dict[str, Any]]:
    """Return the open cases, the earliest promise first, as blocks (``/queue`` and the Home tab)."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    if not cases:
        blocks.append(_section("No open cases. :sparkles:"))
        return blocks
    for case in cases[:QUEUE_LIMIT]:
        where = f" · card in <#{case.card_channel}>" if case.card_channel else ""
        blocks.append(
            _section(
                f"*#{case.id}* {escape(label(case.case_type))} · {customer_label(case)} · {priority_line(case)}\n"
                f"{status_line(case, now)} · promise {countdown_words(case.promised_by - now)}{where}"
            )
        )
    if len(cases) > QUEUE_LIMIT:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {len(cases) - QUEUE_LIMIT} more."}]})
    return blocks


def reassign_view(case: Case, owner: str | None) -> dict[str, Any]:
    """Return the modal that asks whom to hand the case to."""
    return {
        "type": "modal",
        "callback_id": REASSIGN_VIEW,
        "private_metadata": json.dumps({"case_id": case.id, "owner": owner}),
        "title": {"type": "plain_text", "text": f"Reassign case #{case.id}"},
        "submit": {"type": "plain_text", "text": "Reassign"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASSIGN_BLOCK,
                "label": {"type": "plain_text", "text": "Hand the case to"},
                "element": {"type": "users_select", "action_id": REASSIGN_SELECT},
            }
        ],
    }
