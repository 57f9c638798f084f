"""The launcher's speed-ups change nothing Rasa computes: same validation, same predictions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, List

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

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "firstreply.tar.gz"

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
