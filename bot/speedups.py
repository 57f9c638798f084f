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
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import ujson

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
    _installed = True
