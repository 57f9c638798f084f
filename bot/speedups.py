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
4. Reading a message (the NLU graph: both sentence encoders, the classifiers, the language
   guard; about 30-40 ms of CPU) ran on Rasa's event loop, so under a burst every webhook,
   typing indicator and greeting waited behind the messages being read. ``parse_message``
   now runs the graph on one thread of its own per process (``$FIRSTREPLY_PARSE_THREAD``,
   default on), one message at a time, and the loop stays free for the rest: the encoders'
   matrix products release Python's lock, and the loop gets it back within the interpreter's
   switch interval (5 ms) otherwise. The parse result is the same; the components run at
   inference with no shared state that changes.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import ujson

from bot.channels.common import switch_from_env

ENV_PARSE_THREAD = "FIRSTREPLY_PARSE_THREAD"
_installed = False
# Where a domain keeps its encoded JSON (one attribute on the served model's ``Domain``).
_DOMAIN_JSON = "_firstreply_json"


def _compiled_action_response_validation() -> Any:
    from jsonschema import ValidationError, exceptions, validators
    from rasa.core.actions.action import DOCS_BASE_URL, RemoteAction

    schema = RemoteAction.action_response_format_spec()
    validator_class = validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    def _validate_action_result(self: RemoteAction, result: Dict[str, Any]) -> bool:
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


class ActionCall(dict):  # type: ignore[type-arg]
    """The body of a call to the action server, which encodes itself with its domain's JSON kept."""

    def __init__(self, body: Dict[str, Any], domain: Any) -> None:
        super().__init__(body)
        self.domain = domain

    def encoded(self) -> bytes:
        """Return the body as JSON bytes: the domain's part encoded once, the rest now."""
        if "domain" not in self:
            return _dumps(dict(self)).encode()
        rest = _dumps({key: value for key, value in self.items() if key != "domain"})
        domain = domain_json(self.domain)
        return (rest[:-1] + ("," if len(rest) > 2 else "") + '"domain":' + domain + "}").encode()


def _encoding_action_call_format(original: Any) -> Any:
    def _action_call_format(self: Any, tracker: Any, domain: Any) -> Dict[str, Any]:
        body = original(self, tracker, domain)
        if "domain" in body and body["domain"] is not domain.as_dict():
            return body  # not the domain's own dictionary: encoded as it is, as Rasa does
        return ActionCall(body, domain)

    return _action_call_format


def _encoded_request(original: Any) -> Any:
    async def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("json")
        if isinstance(body, ActionCall):
            kwargs["data"] = body.encoded()
            del kwargs["json"]
        return await original(self, *args, **kwargs)

    return request


class ParseThread:
    """The one thread of a process that reads messages (its executor made after any fork)."""

    def __init__(self) -> None:
        """Make nothing yet: a Sanic worker forked from the launcher makes its own thread."""
        self._executor: Optional[ThreadPoolExecutor] = None
        self._pid = 0

    def executor(self) -> ThreadPoolExecutor:
        """Return this process's executor, making it on first use."""
        if self._executor is None or self._pid != os.getpid():
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="firstreply-parse")
            self._pid = os.getpid()
        return self._executor


def _parse_on_own_thread(original: Any, thread: ParseThread) -> Any:
    async def parse_message(
        self: Any, message: Any, tracker: Any = None, only_output_properties: bool = True
    ) -> Dict[str, Any]:
        if self.http_interpreter:
            return await original(self, message, tracker, only_output_properties)
        from rasa.shared.core.trackers import DialogueStateTracker

        if tracker is None:
            tracker = DialogueStateTracker.from_events(message.sender_id, [])
        parse_data = await asyncio.get_running_loop().run_in_executor(
            thread.executor(), self._parse_message_with_graph, message, tracker, only_output_properties
        )
        self._update_full_retrieval_intent(parse_data)
        self._check_for_unseen_features(parse_data)
        return parse_data

    parse_message.__wrapped__ = original  # type: ignore[attr-defined]
    return parse_message


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
    if switch_from_env(ENV_PARSE_THREAD):
        processor = rasa.core.processor.MessageProcessor
        processor.parse_message = _parse_on_own_thread(processor.parse_message, ParseThread())  # type: ignore[method-assign]
    _installed = True
