"""The domain goes to the action server once per model, not with every action call.

Rasa 3.6 puts the whole domain in the body of every call to the action server: here 110 kB
of JSON (the responses in every language), which the action server parsed again each time,
a third of its CPU under a burst. FirstReply's two halves agree on a shorter call:

* Rasa's side (``bot.speedups``) adds the domain's digest to each call
  (``DOMAIN_DIGEST_KEY``). The action server answers with the same digest when it now holds
  that domain; from then on Rasa sends the digest alone.
* The action server's side (``install_on_action_server``, installed when the ``actions``
  package loads) keeps the domains it was sent by digest, gives the one a short call names
  to the action, and answers a digest it does not hold (a restarted or added replica) before
  running anything: rasa_sdk's rejection of the call (HTTP 400) saying ``DOMAIN_UNKNOWN``.
  Rasa then sends the same call again in full, and in full for the next
  ``FULL_CALLS_AFTER_UNKNOWN`` calls, so that behind a round-robin proxy every replica gets
  the domain soon.

An action server without this half never answers with the digest, so Rasa keeps sending it
the whole domain, as Rasa does. And a short call names its action under ``SHORT_CALL_ACTION_KEY``
instead of rasa_sdk's ``next_action``: should one reach such a server anyway (behind one
address with servers of a later release), it runs nothing and answers nothing, and Rasa sends
the call again in full. An action must treat its ``domain`` as read-only: the one held is
shared by the calls that follow.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Dict, Optional

log = logging.getLogger(__name__)

# The key, in an action call and in the action server's answer, of the domain's digest.
DOMAIN_DIGEST_KEY = "firstreply_domain_digest"
# Where a call without the domain names its action (rasa_sdk alone would run it without a domain).
SHORT_CALL_ACTION_KEY = "firstreply_next_action"
# The action server's answer to a call naming a domain it does not hold: rasa_sdk's answer to
# a rejected call (any other exception would be logged as a crash and answered 500) with this error.
DOMAIN_UNKNOWN_STATUS = 400
DOMAIN_UNKNOWN = "domain unknown here: send the call again with the domain"
# After such an answer, how many calls of a Rasa process carry the whole domain again.
FULL_CALLS_AFTER_UNKNOWN = 8
# How many domains an action server keeps (a new model brings a new one).
DOMAINS_KEPT = 4

_domains: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
_lock = threading.Lock()
_installed = False


def remember(digest: str, domain: Dict[str, Any]) -> None:
    """Keep ``domain`` under ``digest`` (the oldest of more than ``DOMAINS_KEPT`` goes)."""
    with _lock:
        _domains[digest] = domain
        _domains.move_to_end(digest)
        while len(_domains) > DOMAINS_KEPT:
            _domains.popitem(last=False)


def held(digest: str) -> Optional[Dict[str, Any]]:
    """Return the domain kept under ``digest``, if any."""
    with _lock:
        return _domains.get(digest)


def with_domain(action_call: Dict[str, Any]) -> Optional[str]:
    """Complete ``action_call`` in place with the domain it names; return its digest (``None``: a plain call).

    A call with the domain in it has it kept; one with the digest alone gets the kept one.

    Raises:
        rasa_sdk.interfaces.ActionExecutionRejection: (``DOMAIN_UNKNOWN``) the digest names no
            domain held here; nothing was run.
    """
    digest = action_call.pop(DOMAIN_DIGEST_KEY, None)
    if SHORT_CALL_ACTION_KEY in action_call:
        action_call["next_action"] = action_call.pop(SHORT_CALL_ACTION_KEY)
    if not isinstance(digest, str):
        return None
    if "domain" in action_call:
        remember(digest, action_call["domain"])
        return digest
    domain = held(digest)
    if domain is None:
        from rasa_sdk.interfaces import ActionExecutionRejection

        log.info("action call names domain %s, not held here (yet): asking for it in full", digest[:12])
        raise ActionExecutionRejection(str(action_call.get("next_action") or ""), DOMAIN_UNKNOWN)
    action_call["domain"] = domain
    return digest


def install_on_action_server() -> None:
    """Make this process's rasa_sdk action executor take calls that name their domain (idempotent)."""
    global _installed
    if _installed:
        return
    from rasa_sdk.executor import ActionExecutor

    original = ActionExecutor.run

    async def run(self: ActionExecutor, action_call: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        digest = with_domain(action_call)
        result = await original(self, action_call)
        if digest is not None and isinstance(result, dict):
            result[DOMAIN_DIGEST_KEY] = digest  # this server holds it now
        return result

    ActionExecutor.run = run  # type: ignore[method-assign]
    _installed = True


def asks_for_the_domain(status: int, body: Any) -> bool:
    """Return whether an action server's error answer (``status``, ``body``) is its ``DOMAIN_UNKNOWN``."""
    if status != DOMAIN_UNKNOWN_STATUS:
        return False
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return DOMAIN_UNKNOWN in text
