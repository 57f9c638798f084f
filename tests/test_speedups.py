"""The launcher's speed-ups change nothing Rasa computes: same validation, same predictions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, TypeVar

import jsonschema
import pytest
from rasa.core.actions.action import RemoteAction
from rasa.core.channels.channel import UserMessage
from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
from rasa.engine.loader import load_predict_graph_runner
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot import speedups
from bot.action_domain import DOMAIN_DIGEST_KEY, DOMAIN_UNKNOWN, DOMAIN_UNKNOWN_STATUS, FULL_CALLS_AFTER_UNKNOWN
from bot.action_domain import SHORT_CALL_ACTION_KEY

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "firstreply.tar.gz"
T = TypeVar("T")

RESPONSES: List[Dict[str, Any]] = [
    {"events": [], "responses": []},
    {"events": [{"event": "slot", "name": "case_type", "value": "billing"}], "responses": [{"response": "utter_ack_billing"}]},
    {"events": [{"event": "slot", "name": 7}], "responses": []},
    {"events": "not a list", "responses": []},
    {"events": [{"no_event_key": True}], "responses": []},
    {"responses": [{"text": "hi"}]},
]


def _original(result: Dict[str, Any]) -> str:
    try:
        jsonschema.validate(result, RemoteAction.action_response_format_spec())
        return "valid"
    except jsonschema.ValidationError as error:
        return f"invalid: {error.message}"


def _compiled(result: Dict[str, Any]) -> str:
    validate = speedups._compiled_action_response_validation()
    try:
        validate(None, result)
        return "valid"
    except jsonschema.ValidationError as error:
        return f"invalid: {error.message}"


@pytest.mark.parametrize("result", RESPONSES)
def test_action_responses_are_judged_exactly_as_rasa_judges_them(result: Dict[str, Any]) -> None:
    original, compiled = _original(result), _compiled(result)
    if original == "valid":
        assert compiled == "valid"
    else:
        assert compiled.startswith(original)
        assert compiled.endswith("/custom-actions")


def _events_of_every_kind() -> List[Any]:
    """Return events of every kind Rasa's schema knows, valid and not, and things that are no event."""
    kinds = [kind["properties"]["event"]["const"]
             for kind in RemoteAction.action_response_format_spec()["properties"]["events"]["items"]["oneOf"]]  # fmt: skip
    events: List[Any] = []
    for name in kinds:
        events += [{"event": name}, {"event": name, "timestamp": 1.5, "metadata": {}}, {"event": name, "timestamp": "x"},
                   {"event": name, "timestamp": True}, {"event": name, "metadata": []}, {"event": name, "timestamp": None}]  # fmt: skip
    events += [
        {"event": "slot", "name": "case_type", "value": None}, {"event": "slot", "name": 7, "value": 1},
        {"event": "slot", "value": 1}, {"event": "slot", "name": "x"},
        {"event": "action", "name": "utter_x", "policy": None, "confidence": 0.3, "hide_rule_turn": False},
        {"event": "action", "name": 3}, {"event": "action", "hide_rule_turn": "no"}, {"event": "action", "confidence": True},
        {"event": "user", "text": "hi", "parse_data": {"intent": {"name": "greet", "confidence": 0.9}, "entities": []}},
        {"event": "user", "text": 5}, {"event": "user", "parse_data": {"intent": {"name": 1}}},
        {"event": "user", "parse_data": {"entities": [{"entity": "x"}]}},
        {"event": "entities", "entities": [{"entity": "order_number", "value": "4711", "start": 0, "end": 4}]},
        {"event": "entities", "entities": [{"entity": "order_number", "start": "0"}]},
        {"event": "bot", "text": "hi", "data": {}}, {"event": "active_loop", "name": None},
        {"event": "no_such_event"}, {"event": 7}, {"name": "x"}, "slot", ["event", "slot"], None, 3,
    ]  # fmt: skip
    return events


def test_the_fast_check_says_valid_exactly_when_rasas_schema_does() -> None:
    from jsonschema import validators

    schema = RemoteAction.action_response_format_spec()
    validator_class = validators.validator_for(schema)
    full, fast = validator_class(schema), speedups._valid_action_result(schema, validator_class)
    results: List[Any] = [{"events": [event], "responses": []} for event in _events_of_every_kind()]
    results += [{"events": _events_of_every_kind()[:6]}, {}, {"events": []}, {"events": None}, {"events": {}},
                {"responses": [{"text": "hi"}], "events": [{"event": "slot", "name": "a", "value": 1}]},
                {"responses": ["hi"]}, {"responses": None}, [], "events", None]  # fmt: skip

    verdicts = [(fast(result), full.is_valid(result)) for result in results]
    assert [v for v in verdicts if v[0] != v[1]] == []
    assert sum(f for f, _ in verdicts) > 60 and sum(not f for f, _ in verdicts) > 50  # both kinds are tried


def test_invalid_responses_exist_in_the_table() -> None:
    assert [_original(result) == "valid" for result in RESPONSES] == [True, True, False, False, False, True]


@pytest.fixture(scope="module")
def runners(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    if not MODEL.exists():
        pytest.fail(f"{MODEL} is missing: run `make train` (or `make test`, which trains first)")
    sequential = speedups._sequential_graph_runner()
    metadata, dask_runner = load_predict_graph_runner(
        tmp_path_factory.mktemp("dask"), MODEL, LocalModelStorage, DaskGraphRunner
    )
    _, sequential_runner = load_predict_graph_runner(
        tmp_path_factory.mktemp("sequential"), MODEL, LocalModelStorage, sequential
    )
    return {"metadata": metadata, "dask": dask_runner, "sequential": sequential_runner}


MESSAGES = ["where is my parcel?? 2 weeks and nothing", "hi", "blorp", "", "/affirm", "WORST service ever!!!"]


@pytest.mark.parametrize("text", MESSAGES)
def test_the_sequential_runner_parses_exactly_as_dask_does(runners: Dict[str, Any], text: str) -> None:
    target = runners["metadata"].nlu_target

    def parse(runner: Any) -> Any:
        tracker = DialogueStateTracker("t", [])
        message = UserMessage(text, message_id="m-1")
        result = runner.run(inputs={PLACEHOLDER_MESSAGE: [message], PLACEHOLDER_TRACKER: tracker}, targets=[target])
        return [parsed.as_dict(only_output_properties=True) for parsed in result[target]]

    sequential = parse(runners["sequential"])
    assert sequential == parse(runners["dask"])
    # A "/intent" payload is parsed by Rasa's RegexMessageHandler alone, without the pipeline.
    expected_keys = {"intent", "entities"} if text.startswith("/") else {"intent", "intent_ranking", "entities", "complaint"}
    assert expected_keys <= set(sequential[0])


def test_the_sequential_runner_predicts_exactly_as_dask_does(runners: Dict[str, Any]) -> None:
    target = runners["metadata"].core_target
    domain = runners["metadata"].domain
    events = [
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        UserUttered("where is my parcel", {"name": "order_status", "confidence": 0.98}),
    ]
    tracker = DialogueStateTracker.from_events("t", events, domain.slots)

    def predict(runner: Any) -> Any:
        prediction = runner.run(inputs={PLACEHOLDER_TRACKER: tracker}, targets=[target])[target]
        return prediction.max_confidence_index, prediction.policy_name, prediction.probabilities

    sequential, dask = predict(runners["sequential"]), predict(runners["dask"])
    assert sequential == dask
    assert domain.action_names_or_texts[sequential[0]] == "action_acknowledge"


def test_install_replaces_the_hot_spots_once() -> None:
    import rasa.core.processor

    speedups.install()
    first = (RemoteAction._validate_action_result, rasa.core.processor.DaskGraphRunner)
    speedups.install()
    assert (RemoteAction._validate_action_result, rasa.core.processor.DaskGraphRunner) == first
    assert rasa.core.processor.DaskGraphRunner.__name__ == "SequentialGraphRunner"
    assert asyncio.iscoroutinefunction(first[0]) is False


def _tracker_with_a_turn(domain: Any) -> DialogueStateTracker:
    events = [
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        UserUttered("où est mon colis? ça fait 2 semaines / rien", {"name": "order_status", "confidence": 0.98},
                    metadata={"greeted_at_edge": True, "big": 10**30}),
    ]  # fmt: skip
    return DialogueStateTracker.from_events("customer-1", events, domain.slots)


@pytest.fixture(scope="module")
def served_domain(runners: Dict[str, Any]) -> Any:
    return runners["metadata"].domain


def test_the_action_call_body_is_the_json_document_rasa_sends(served_domain: Any) -> None:
    action = RemoteAction("action_acknowledge", None)
    tracker = _tracker_with_a_turn(served_domain)
    body = action._action_call_format(tracker, served_domain)
    call = speedups._encoding_action_call_format(lambda *_: body)(action, tracker, served_domain)

    assert isinstance(call, speedups.ActionCall)

    sent = json.loads(call.encoded())
    assert sent.pop(DOMAIN_DIGEST_KEY) == speedups.domain_digest(served_domain)  # the one key Rasa's has not
    assert sent == json.loads(json.dumps(body))
    assert sent["domain"]["responses"]["utter_greeting"]
    # Without the domain: the same call, naming it by its digest.
    short = json.loads(call.encoded(with_domain=False))
    assert "domain" not in short and short.pop(DOMAIN_DIGEST_KEY) == speedups.domain_digest(served_domain)
    assert short.pop(SHORT_CALL_ACTION_KEY) == "action_acknowledge" and "next_action" not in short
    assert short == {key: value for key, value in json.loads(json.dumps(body)).items()
                     if key not in ("domain", "next_action")}  # fmt: skip
    assert len(call.encoded(with_domain=False)) * 10 < len(call.encoded())


def test_the_domain_is_encoded_once_per_domain(served_domain: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.shared.core.domain import Domain

    encoded: List[Any] = []
    real = speedups._dumps
    monkeypatch.setattr(speedups, "_dumps", lambda value: encoded.append(value) or real(value))
    other = Domain.from_dict({"intents": ["greet"], "responses": {"utter_hi": [{"text": "hi"}]}})
    first, again, elsewhere = (speedups.domain_json(d) for d in (served_domain, served_domain, other))

    assert first is again
    assert '"utter_hi"' in elsewhere and '"utter_hi"' not in first
    assert sum(value is served_domain.as_dict() for value in encoded) <= 1
    assert sum(value is other.as_dict() for value in encoded) == 1


def test_what_ujson_cannot_encode_is_encoded_by_json(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(value: Any) -> str:
        raise TypeError("not here")

    monkeypatch.setattr(speedups.ujson, "dumps", refuse)
    assert speedups._dumps({"a": [1, "é"]}) == '{"a": [1, "\\u00e9"]}'


def test_a_body_without_the_domain_is_sent_as_it_is(served_domain: Any) -> None:

    call = speedups.ActionCall({"next_action": "action_x", "tracker": {"events": []}}, served_domain)
    assert json.loads(call.encoded()) == {"next_action": "action_x", "tracker": {"events": []}}
    assert b"responses" not in call.encoded()


def _against(routes: Dict[str, Any], scenario: Callable[[str], Awaitable[T]]) -> T:
    """Serve ``routes`` (path: aiohttp handler of POSTs) on a free local port; return ``scenario(its URL)``."""
    from aiohttp import web

    async def main() -> T:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_post(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            speedups.install()
            return await scenario(f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    return asyncio.run(main())


async def _acknowledge(url: str, domain: Any, times: int = 1, tracker: Any = None) -> List[Any]:
    """Run the remote ``action_acknowledge`` against the action server at ``url`` ``times`` times; return its events."""
    from rasa.core.channels.channel import CollectingOutputChannel
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.utils.endpoints import EndpointConfig

    action = RemoteAction("action_acknowledge", EndpointConfig(f"{url}/webhook"))
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    return [await action.run(CollectingOutputChannel(), nlg, tracker or _tracker_with_a_turn(domain), domain)
            for _ in range(times)]  # fmt: skip


def _answer(call: Dict[str, Any]) -> Any:
    """Return an action server's answer with no events, saying it holds the call's domain."""
    from aiohttp import web

    return web.json_response({"events": [], "responses": [], DOMAIN_DIGEST_KEY: call.get(DOMAIN_DIGEST_KEY)})


def test_the_action_server_receives_the_same_document_over_http(served_domain: Any) -> None:
    from aiohttp import web

    received: List[bytes] = []
    content_types: List[str] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append(await request.read())
        content_types.append(request.content_type)
        answer = {"events": [{"event": "slot", "name": "case_type", "value": "delivery"}], "responses": []}
        return web.json_response(answer)

    tracker = _tracker_with_a_turn(served_domain)
    [events] = _against({"/webhook": webhook}, lambda url: _acknowledge(url, served_domain, tracker=tracker))

    assert [(e.key, e.value) for e in events] == [("case_type", "delivery")]
    assert len(received) == 1 and content_types == ["application/json"]
    # Rasa's own body for the same call, encoded by the standard library as Rasa does.
    rasa_body = json.loads(json.dumps(RemoteAction("action_acknowledge", None)._action_call_format(tracker, served_domain)))
    sent = json.loads(received[0])
    assert sent.pop(DOMAIN_DIGEST_KEY) and sent == rasa_body
    assert rasa_body["domain"]["responses"] and rasa_body["tracker"]["latest_message"]["text"].startswith("où est")


def test_the_domain_goes_in_full_until_the_action_server_holds_it(served_domain: Any) -> None:
    # Two action server replicas behind one URL, answering in turn as a round-robin proxy does:
    # each holds a domain once a call brought it in full, and asks for a domain it lacks.
    from aiohttp import web

    replicas: List[set] = [set(), set()]
    calls: List[tuple] = []  # (replica, "full" / "digest", status)

    async def webhook(request: web.Request) -> web.Response:
        replica = len(calls) % 2
        call = json.loads(await request.read())
        digest = call[DOMAIN_DIGEST_KEY]
        if "domain" in call:
            replicas[replica].add(digest)
        elif digest not in replicas[replica]:
            calls.append((replica, "digest", DOMAIN_UNKNOWN_STATUS))
            return web.json_response({"error": DOMAIN_UNKNOWN, "action_name": call[SHORT_CALL_ACTION_KEY]},
                                     status=DOMAIN_UNKNOWN_STATUS)  # fmt: skip
        calls.append((replica, "full" if "domain" in call else "digest", 200))
        return _answer(call)

    _against({"/webhook": webhook}, lambda url: _acknowledge(url, served_domain, FULL_CALLS_AFTER_UNKNOWN + 4))

    # The first call in full (replica 0 holds it now); the second by digest reaches replica 1,
    # which lacks it: sent again in full, and the next calls too, so that both replicas hold it.
    assert calls[:3] == [(0, "full", 200), (1, "digest", DOMAIN_UNKNOWN_STATUS), (0, "full", 200)]
    assert [kind for _, kind, _ in calls[3:3 + FULL_CALLS_AFTER_UNKNOWN]] == ["full"] * FULL_CALLS_AFTER_UNKNOWN
    assert replicas[0] == replicas[1] == {speedups.domain_digest(served_domain)}
    assert calls[3 + FULL_CALLS_AFTER_UNKNOWN:] == [(1, "digest", 200), (0, "digest", 200)]


def test_an_action_server_that_never_says_it_holds_the_domain_gets_it_every_time(served_domain: Any) -> None:
    from aiohttp import web

    with_domain: List[bool] = []

    async def webhook(request: web.Request) -> web.Response:  # rasa_sdk as released: no digest in its answer
        with_domain.append("domain" in json.loads(await request.read()))
        return web.json_response({"events": [], "responses": []})

    _against({"/webhook": webhook}, lambda url: _acknowledge(url, served_domain, 3))
    assert with_domain == [True, True, True]


def test_an_action_servers_own_rejection_still_reaches_rasa_as_one(served_domain: Any) -> None:
    # A form's validation rejecting a call answers 400 too: that one is Rasa's to handle, not resent.
    from aiohttp import web
    from rasa.core.actions.action import ActionExecutionRejection

    bodies: List[dict] = []

    async def webhook(request: web.Request) -> web.Response:
        call = json.loads(await request.read())
        bodies.append(call)
        if len(bodies) == 1:  # it holds the domain now
            return _answer(call)
        return web.json_response({"error": "not this one", "action_name": "action_acknowledge"}, status=400)

    async def scenario(url: str) -> None:
        await _acknowledge(url, served_domain)
        with pytest.raises(ActionExecutionRejection):
            await _acknowledge(url, served_domain)

    _against({"/webhook": webhook}, scenario)
    assert ["domain" in body for body in bodies] == [True, False]


def test_action_calls_reuse_one_connection_and_other_requests_keep_their_own_session(served_domain: Any) -> None:
    from aiohttp import web
    from rasa.utils.endpoints import EndpointConfig

    peers: List[Any] = []

    async def webhook(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return _answer(json.loads(await request.read()))

    async def other(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return web.json_response({"ok": True})

    async def scenario(url: str) -> None:
        await _acknowledge(url, served_domain, 3)
        # Anything else Rasa sends through an endpoint opens and closes its own session, as in Rasa.
        for _ in range(2):
            assert await EndpointConfig(f"{url}/other").request(json={}) == {"ok": True}

    _against({"/webhook": webhook, "/other": other}, scenario)
    assert len(peers) == 5 and len(set(peers[:3])) == 1
    assert len(set(peers)) == 3  # the action calls' kept connection, and one per other request


def test_a_short_call_that_reaches_an_action_server_of_an_older_release_is_sent_again_in_full(
    served_domain: Any,
) -> None:
    # Behind one address: one server that holds domains, one that is rasa_sdk as released (it
    # reads "next_action" only; without it, it runs nothing and answers null).
    from aiohttp import web

    ran: List[tuple] = []  # (server, had the domain; None: ran nothing)

    async def webhook(request: web.Request) -> web.Response:
        call = json.loads(await request.read())
        if len(ran) % 2 == 0:  # in turn, as a round-robin proxy sends them
            ran.append(("new", "domain" in call))
            return _answer(call)
        if "next_action" not in call:
            ran.append(("old", None))
            return web.json_response(None)
        ran.append(("old", "domain" in call))
        return web.json_response({"events": [], "responses": []})

    _against({"/webhook": webhook}, lambda url: _acknowledge(url, served_domain, 3))
    # The first call in full to the new server (it holds the domain now); the second, short, to
    # the old one, which ran nothing: sent again in full. No action ever ran without the domain.
    assert ran[:3] == [("new", True), ("old", None), ("new", True)]
    assert all(had is not False for _, had in ran)
