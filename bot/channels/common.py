"""Pieces every connector needs: credentials checks, secrets compared, typed text made
safe, background work, text splitting, a bounded memory, and the replay of an update Rasa
may already have handled (``unless_saved``).

No platform code here; Telegram, Slack, the web chat and the REST channel build on these
(the webhook connectors through ``bot.channels.base``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from rasa.shared.core.events import BotUttered, UserUttered
from rasa.shared.exceptions import RasaException

if TYPE_CHECKING:
    from rasa.core.channels.channel import UserMessage

OnNewMessage = Callable[["UserMessage"], Awaitable[Any]]

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

# Per-process memories (names, DM channels): bounded, oldest forgotten first.
CACHE_SIZE = 10_000

# A paragraph break, then the end of a sentence, then a line break, then any space:
# where a long text is best cut, best first.
_CUT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n\s*\n"),
    re.compile(r"(?<=[.!?…])\s+"),
    re.compile(r"\n"),
    re.compile(r"\s+"),
)


class ChannelCredentialsError(RasaException):
    """A connector's credentials are missing or malformed; the message names the fix."""


def credential(
    credentials: Mapping[str, Any] | None,
    key: str,
    env_name: str,
    channel: str,
    environ: Mapping[str, str],
    *,
    pattern: re.Pattern[str] | None = None,
    malformed: str = "",
) -> str:
    """Return the credential ``key``, falling back to the environment variable ``env_name``.

    With ``pattern``, the value must match it in full.

    Raises:
        ChannelCredentialsError: neither holds a non-empty value (the message names the
            variable and the key, never a value), or the value does not match ``pattern``
            (the message is ``malformed``).
    """
    value = (credentials or {}).get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        value = environ.get(env_name, "")
    if not isinstance(value, str) or not value.strip():
        raise ChannelCredentialsError(
            f"The {channel} channel needs {env_name}: set that environment variable "
            f"(credentials.yml: `{key}: ${{{env_name}}}`)."
        )
    if pattern is not None and not pattern.fullmatch(value.strip()):
        raise ChannelCredentialsError(malformed)
    return value.strip()


def count_from_env(name: str, default: int) -> int:
    """Return the whole number of at least 1 in ``$name`` (``default`` when unset or empty).

    Raises:
        ValueError: the value is not a whole number of at least 1.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def switch_from_env(name: str, default: bool = True) -> bool:
    """Return the on/off switch in ``$name`` (``default`` when unset or empty).

    Raises:
        ValueError: the value is neither on nor off.
    """
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "1", "true", "yes"):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name} must be on or off, not {raw!r}")


def same_secret(given: str, expected: str) -> bool:
    """Return whether a secret from a request equals ``expected`` (constant-time comparison).

    Sanic keeps header bytes that are not UTF-8 as surrogates: they are given back as they
    came, so such a header never matches and never raises.
    """
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def typed_text(text: str) -> str:
    """Return what Rasa reads of a typed message: no leading ``/``, so no intent injection.

    Rasa reads ``/affirm`` as an intent, and customers must not be able to inject intents.
    Slashes and spaces go together until neither is left: "/ /affirm" must not become "/affirm".
    """
    rest = text.strip()
    while rest.startswith("/"):
        rest = rest.lstrip("/").lstrip()
    return rest


class BoundedDict(dict[K, V]):
    """A dict that forgets its oldest entries beyond ``size``."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        """Keep at most ``size`` entries."""
        super().__init__()
        self.size = size

    def __setitem__(self, key: K, value: V) -> None:
        """Set ``key``; forget the oldest entries beyond the size."""
        super().__setitem__(key, value)
        while len(self) > self.size:
            del self[next(iter(self))]


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, none empty.

    Cuts at a paragraph break if one falls in the second half of the window, else at a
    sentence end, a line break, a space, and only as a last resort inside a word.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = _best_cut(window, minimum=limit // 2)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head:
            parts.append(head)
    if rest:
        parts.append(rest)
    return parts


def _best_cut(window: str, minimum: int) -> int:
    """Return where to cut ``window`` (its last character belongs to the next part)."""
    for pattern in _CUT_PATTERNS:
        ends = [match.start() for match in pattern.finditer(window) if minimum <= match.start() < len(window)]
        if ends:
            return ends[-1]
    return len(window) - 1


class BackgroundTasks:
    """Work started after the platform got its fast answer.

    Keeps a reference to every running task (the event loop holds only weak ones) and
    logs each failure with its traceback: the one place connector errors are reported.
    """

    def __init__(self, name: str) -> None:
        """Name the owner, for the log lines."""
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None], label: str) -> asyncio.Task[None]:
        """Run ``work`` in the background; ``label`` identifies it in the log."""
        task = asyncio.get_running_loop().create_task(work, name=f"{self._name}:{label}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            log.warning("%s cancelled", task.get_name())
            return
        error = task.exception()
        if error is not None:
            log.error("%s failed", task.get_name(), exc_info=error)

    def __len__(self) -> int:
        """Return how many tasks are still running."""
        return len(self._tasks)

    async def wait(self) -> None:
        """Wait until every task started so far (and any they start) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# --- handling an update again (bot.channels.inbox) ----------------------------------------


def unless_saved(on_new_message: OnNewMessage, app: Any, channel: str) -> OnNewMessage:
    """Wrap ``on_new_message`` for an update handled again after a crash or a failure.

    If Rasa saved the conversation with this message, it was handled: only its replies are
    sent again, through the message's output channel (which skips those that went out
    before, see ``bot.channels.inbox``). ``app`` is Rasa's Sanic app (``ctx.agent``);
    ``channel`` names the connector in the log.
    """

    async def deliver(message: UserMessage) -> Any:
        saved = await saved_replies(app, message)
        if saved is None:
            return await on_new_message(message)
        log.info("%s %s: already in the conversation; sending its %d reply(ies) again if unsent",
                 channel, message.message_id, len(saved))  # fmt: skip
        for reply in saved:
            await message.output_channel.send_response(message.sender_id, reply)
        return None

    return deliver


async def saved_replies(app: Any, message: UserMessage) -> list[dict[str, Any]] | None:
    """Return the replies Rasa recorded for ``message``, or ``None`` if it has not got it.

    Read from the tracker store of Rasa's agent (``app.ctx.agent.tracker_store``): the
    ``BotUttered`` events after the ``UserUttered`` with the message's id.
    """
    agent = getattr(getattr(app, "ctx", None), "agent", None)
    tracker_store = getattr(agent, "tracker_store", None)
    if tracker_store is None:
        return None
    tracker = await tracker_store.retrieve(message.sender_id)
    if tracker is None:
        return None
    replies: list[dict[str, Any]] | None = None
    for event in tracker.events:
        if isinstance(event, UserUttered):
            if replies is not None:
                break
            if event.message_id == message.message_id:
                replies = []
        elif replies is not None and isinstance(event, BotUttered):
            replies.append(event.message())
    return replies
