"""Rasa 3.6 hot spots that FirstReply's launcher removes, with behaviour unchanged.

Measured with py-spy on the Rasa server under load (docs/benchmarks.md):

1. About two thirds of the server's time went to ``jsonschema.validate`` checking each
   action server response: it first re-checks the *schema itself* against the JSON
   Schema meta-schema, on every call, although Rasa's schema is a constant. Here the
   schema is checked once and its validator kept; responses are validated exactly as
   before (same schema, same errors, same message).
2. A quarter of what remained was dask's scheduler wrapped around every graph run
   (NLU once per message, the policies once per predicted action), where the nodes
   themselves are a few cheap calls. ``SequentialGraphRunner`` runs the same nodes, with
   the same inputs, in dependency order, in the calling thread — what dask's
   synchronous scheduler does, without its bookkeeping — and keeps the pruned graph of
   each set of targets instead of recomputing it per run. Training is untouched.
3. Encoding the action server's request body was the largest block of work on Rasa's event
   loop under a burst (a fifth of it): every custom action call sends the whole domain,
   110 kB of JSON with the responses in every language, encoded again each time with the
   standard library. Here the domain's part is encoded once per domain and the rest with
   ujson (already one of Rasa's own dependencies); the action server receives the same JSON
   document (same keys and values). Anything ujson cannot encode falls back to ``json``.
4. And once an action server holds the domain, it is not sent at all: the call names it by
   its digest (``bot.action_domain``, whose other half runs in the action server).
5. Rasa opens a new HTTP session, so a new TCP connection, for every action call; making the
   connection was a quarter of the busy time of Rasa's event loop under a burst. Action calls
   here go through one kept session per event loop and action server, whose idle connections
   are reused for ``ACTION_KEEPALIVE_SECONDS`` (less than the action server keeps them, so a
   call never lands on a connection the server is closing).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import weakref
from typing import Any, Dict, List, Set, Tuple

import ujson

from bot.action_domain import DOMAIN_DIGEST_KEY, FULL_CALLS_AFTER_UNKNOWN, SHORT_CALL_ACTION_KEY, asks_for_the_domain

_installed = False
# Where a domain keeps its encoded JSON and that JSON's digest (attributes on the served model's ``Domain``).
_DOMAIN_JSON = "_firstreply_json"
_DOMAIN_DIGEST = "_firstreply_digest"
# Per action server URL: the digests of the domains it said it holds, and how many calls
# still go with the whole domain after it said it did not hold one (``bot.action_domain``).
_HELD: Dict[str, Set[str]] = {}
_FULL_CALLS: Dict[str, int] = {}
# How long an idle connection to the action server is reused: under rasa_sdk's (Sanic's) 5 s.
ACTION_KEEPALIVE_SECONDS = 2.0
# Set while an action call is made: Rasa's request then borrows the kept session (``_kept_session``).
_KEEP_SESSION: contextvars.ContextVar[bool] = contextvars.ContextVar("firstreply_keep_session", default=False)
_SESSIONS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[Tuple[Any, ...], Any]]" = (
    weakref.WeakKeyDictionary()
)


def _compiled_action_response_validation() -> Any:
    from jsonschema import ValidationError, exceptions, validators
    from rasa.core.actions.action import DOCS_BASE_URL, RemoteAction

    schema = RemoteAction.action_response_format_spec()
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    valid = _valid_action_result(schema, validator_class)

    def _validate_action_result(self: RemoteAction, result: Dict[str, Any]) -> bool:
        if valid(result):
            return True
        error = exceptions.best_match(validator.iter_errors(result))
        if error is None:
            return True
        assert isinstance(error, ValidationError)
        error.message += (
            f". Failed to validate Action server response from API, "
            f"make sure your response from the Action endpoint is valid. "
            f"For more information about the format visit "
            f"{DOCS_BASE_URL}/custom-actions"
        )
        raise error

    return _validate_action_result


def _valid_action_result(schema: Dict[str, Any], validator_class: Any) -> Any:
    """Return a test of an action server's answer against ``schema`` (Rasa's), that only says "valid" faster.

    Rasa's schema checks each event against every kind of event (``oneOf`` 23 schemas), and
    every kind but one fails on its ``"event": {"const": ...}``; that was a fifth of the
    time Rasa's loop spent on a new customer. Here each event is checked against the one
    kind its name gives, with the keywords that apply to all kinds: valid there exactly when
    valid under ``oneOf``, as the other kinds cannot match its name. Anything else (no kind by
    that name, an error) returns ``False``, and the caller runs the whole schema for Rasa's error.
    """
    events = schema["properties"]["events"]
    event_schema = events["items"]
    shared = {key: value for key, value in event_schema.items() if key != "oneOf"}
    by_name = {kind["properties"]["event"]["const"]: validator_class({"allOf": [shared, kind]})
               for kind in event_schema["oneOf"]}  # fmt: skip
    outline = validator_class({**schema, "properties": {**schema["properties"], "events": {"type": events["type"]}}})

    def valid(result: Any) -> bool:
        if not outline.is_valid(result):
            return False
        for event in result.get("events") or ():
            kind = by_name.get(event.get("event")) if isinstance(event, dict) else None
            if kind is None or not kind.is_valid(event):
                return False
        return True

    return valid


def _sequential_graph_runner() -> type:
    from rasa.engine.exceptions import GraphRunError
    from rasa.engine.graph import GraphSchema
    from rasa.engine.runner.dask import DaskGraphRunner

    class SequentialGraphRunner(DaskGraphRunner):
        """Runs a prediction graph's nodes in dependency order, without dask."""

        def run(self, inputs: Dict[str, Any] | None = None, targets: List[str] | None = None) -> Dict[str, Any]:
            """Run the graph (the same contract as ``DaskGraphRunner.run``)."""
            run_targets = list(targets) if targets else list(self._graph_schema.target_names)
            schema = self._minimal_schema(tuple(run_targets))
            results: Dict[str, Any] = {}
            for name, value in (inputs or {}).items():
                if isinstance(value, str) and value in schema.nodes:
                    raise GraphRunError(
                        f"Input value '{value}' clashes with a node name. Make sure that none of the "
                        f"input names passed to the `run` method are the same as node names in the graph schema."
                    )
                results[name] = (name, value)

            def compute(name: str) -> Any:
                if name not in results:
                    needs = schema.nodes[name].needs.values()
                    results[name] = self._instantiated_nodes[name](*(compute(need) for need in needs))
                return results[name]

            try:
                return dict(compute(target) for target in run_targets)
            except RuntimeError as error:
                raise GraphRunError("Error running runner.") from error

        def _minimal_schema(self, targets: Tuple[str, ...]) -> GraphSchema:
            cache = self.__dict__.setdefault("_schemas", {})
            if targets not in cache:
                cache[targets] = self._graph_schema.minimal_graph_schema(list(targets))
            return cache[targets]

    return SequentialGraphRunner


def _dumps(value: Any) -> str:
    try:
        return str(ujson.dumps(value))
    except (TypeError, OverflowError, ValueError):
        return json.dumps(value)


def domain_json(domain: Any) -> str:
    """Return ``domain.as_dict()`` as JSON, encoded once per ``Domain`` (a new model has a new one)."""
    encoded = domain.__dict__.get(_DOMAIN_JSON)
    if encoded is None:
        encoded = _dumps(domain.as_dict())
        domain.__dict__[_DOMAIN_JSON] = encoded
    return str(encoded)


def domain_digest(domain: Any) -> str:
    """Return the digest of ``domain``'s JSON (``domain_json``), computed once per ``Domain``."""
    digest = domain.__dict__.get(_DOMAIN_DIGEST)
    if digest is None:
        digest = hashlib.sha256(domain_json(domain).encode()).hexdigest()
        domain.__dict__[_DOMAIN_DIGEST] = digest
    return str(digest)


class ActionCall(dict):  # type: ignore[type-arg]
    """The body of a call to the action server, which encodes itself with its domain's JSON kept."""

    def __init__(self, body: Dict[str, Any], domain: Any) -> None:
        super().__init__(body)
        self.domain = domain

    def encoded(self, with_domain: bool = True) -> bytes:
        """Return the body as JSON bytes: the domain's part encoded once, the rest now.

        The domain's digest goes with it (``bot.action_domain``); ``with_domain=False``: the
        digest alone, for an action server that holds the domain, and the action under a key
        only such a server reads.
        """
        if "domain" not in self:
            return _dumps(dict(self)).encode()
        rest = {key: value for key, value in self.items() if key != "domain"}
        rest[DOMAIN_DIGEST_KEY] = domain_digest(self.domain)
        if not with_domain:
            rest[SHORT_CALL_ACTION_KEY] = rest.pop("next_action", None)
            return _dumps(rest).encode()
        return (_dumps(rest)[:-1] + ',"domain":' + domain_json(self.domain) + "}").encode()


def _encoding_action_call_format(original: Any) -> Any:
    def _action_call_format(self: Any, tracker: Any, domain: Any) -> Dict[str, Any]:
        body = original(self, tracker, domain)
        if "domain" in body and body["domain"] is not domain.as_dict():
            return body  # not the domain's own dictionary: encoded as it is, as Rasa does
        return ActionCall(body, domain)

    return _action_call_format


class _Borrowed:
    """A kept session lent to one request of Rasa's, which would close a session of its own after it."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def __aenter__(self) -> Any:
        return self.session

    async def __aexit__(self, *_exc: Any) -> None:
        return None


def _kept_session(endpoint: Any) -> Any:
    """Return this event loop's open session for ``endpoint`` (made as Rasa makes its own, with kept connections)."""
    import aiohttp
    from rasa.core.constants import DEFAULT_REQUEST_TIMEOUT

    loop = asyncio.get_running_loop()
    sessions = _SESSIONS.get(loop)
    if sessions is None:
        sessions = _SESSIONS[loop] = {}
        # When the loop goes, or the process ends, its sessions are closed (quietly).
        weakref.finalize(loop, _close_kept_sessions, sessions)
    auth = endpoint.basic_auth or {}
    key = (endpoint.url, tuple(sorted((endpoint.headers or {}).items())), auth.get("username"), auth.get("password"))
    session = sessions.get(key)
    if session is None or session.closed:
        session = sessions[key] = aiohttp.ClientSession(
            headers=endpoint.headers,
            auth=aiohttp.BasicAuth(auth["username"], auth["password"]) if auth else None,
            timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
            connector=aiohttp.TCPConnector(keepalive_timeout=ACTION_KEEPALIVE_SECONDS),
        )
    return session


def _close_kept_sessions(sessions: Dict[Tuple[Any, ...], Any]) -> None:
    """Close the connections of ``sessions`` (their loop is gone or closing: nothing to wait for)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp's close, not awaited: it has no loop
        for session in sessions.values():
            if session.connector is not None:
                session.connector.close()
    sessions.clear()


def _session_kept_for_action_calls(original: Any) -> Any:
    def session(self: Any) -> Any:
        return _Borrowed(_kept_session(self)) if _KEEP_SESSION.get() else original(self)

    return session


def _encoded_request(original: Any) -> Any:
    from rasa.utils.endpoints import ClientResponseError

    async def send(self: Any, args: Any, data: bytes, kwargs: Dict[str, Any]) -> Any:
        kept = _KEEP_SESSION.set(True)
        try:
            return await original(self, *args, data=data, **kwargs)
        finally:
            _KEEP_SESSION.reset(kept)

    async def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("json")
        if not isinstance(body, ActionCall):
            return await original(self, *args, **kwargs)
        del kwargs["json"]
        if "domain" not in body:
            return await send(self, args, body.encoded(), kwargs)
        digest, held = domain_digest(body.domain), _HELD.setdefault(self.url, set())
        full_calls = _FULL_CALLS.get(self.url, 0)
        if full_calls or digest not in held:
            _FULL_CALLS[self.url] = max(full_calls - 1, 0)
            answer = await send(self, args, body.encoded(), kwargs)
        else:
            try:
                answer = await send(self, args, body.encoded(with_domain=False), kwargs)
            except ClientResponseError as error:
                if not asks_for_the_domain(error.status, error.text):
                    raise
                answer = None
            if not isinstance(answer, dict) or answer.get(DOMAIN_DIGEST_KEY) != digest:
                # An action server that does not hold it (restarted, or another replica), or that
                # cannot read a short call and ran nothing: the same call again in full, and the
                # next ones too, until every replica may have it.
                _FULL_CALLS[self.url] = FULL_CALLS_AFTER_UNKNOWN
                answer = await send(self, args, body.encoded(), kwargs)
        if isinstance(answer, dict) and answer.pop(DOMAIN_DIGEST_KEY, None) == digest:
            held.add(digest)
        return answer

    return request


def install() -> None:
    """Apply the speed-ups to this process (idempotent)."""
    global _installed
    if _installed:
        return
    import rasa.core.processor
    from rasa.core.actions.action import RemoteAction
    from rasa.utils.endpoints import EndpointConfig

    RemoteAction._validate_action_result = _compiled_action_response_validation()  # type: ignore[method-assign]
    rasa.core.processor.DaskGraphRunner = _sequential_graph_runner()  # type: ignore[misc]
    RemoteAction._action_call_format = _encoding_action_call_format(RemoteAction._action_call_format)  # type: ignore[method-assign]
    EndpointConfig.request = _encoded_request(EndpointConfig.request)  # type: ignore[method-assign]
    EndpointConfig.session = _session_kept_for_action_calls(EndpointConfig.session)  # type: ignore[method-assign]
    _installed = True
