"""Tests for bot.desk.customer_texts: what the desk says to customers by itself, in their language.

The shipped domain and support.yml, real cases in a temporary case store, and promises made
by ``bot.eta`` on Northwind's calendar (Europe/London), so the new deadline is worded by
Babel as the dialogue's first promise is.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from bot.cases import Case, CaseStore
from bot.constants import DESK_RESPONSES, REASON_BUSY, REASON_CLOSED, REASON_CLOSING, REASON_SLOW
from bot.desk.customer_texts import CustomerTexts, CustomerTextsError
from bot.eta import Promise, estimate_promise
from bot.eta.estimate import QueueSnapshot
from bot.ops import SupportConfig, load_support_config
from bot.ops.cli import check_main
from bot.ops.responses import load_responses, missing_responses
from tests.desk_support import open_case
from tests.eta_support import TARGETS, at, northwind

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = ROOT / "domain"
OPEN = at("2026-12-07T10:00:00+00:00")  # Monday, open until 20:00
NIGHT = at("2026-12-07T22:00:00+00:00")  # Monday night: opens 8:00 on Tuesday
CHRISTMAS = at("2026-12-25T12:00:00+00:00")  # closed for Christmas Day, then Boxing Day


@pytest.fixture(scope="module")
def support() -> SupportConfig:
    return load_support_config(ROOT / "support.yml")


@pytest.fixture(scope="module")
def texts(support: SupportConfig) -> CustomerTexts:
    return CustomerTexts.load(support)


@pytest.fixture
def case(store: CaseStore) -> Case:
    """Maria Lopez's case, in English."""
    return open_case(store, customer_name="Maria Lopez")


def promise_at(now: datetime) -> Promise:
    queue = QueueSnapshot(cases_ahead=0, agents_on_shift=2, recent_handle_minutes=None, recent_samples=0)
    return estimate_promise(now, northwind(), queue, TARGETS)


def update(texts: CustomerTexts, case: Case, now: datetime, reason: str) -> str:
    return texts.update(case, texts.estimate(case, promise_at(now), reason, now, northwind()))


# --- the new estimate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "now", "reason", "expected"),
    [
        pytest.param(
            "en", OPEN, REASON_SLOW,
            "Sorry, Maria — case #{id} is taking longer than we said: it's taking us longer than usual. "
            "A person will reply within about 15 minutes.",
            id="en-open",
        ),
        pytest.param(
            "en", NIGHT, REASON_CLOSED,
            "Sorry, Maria — case #{id} is taking longer than we said: we're now closed. "
            "A person will reply by 8:15 tomorrow, Tuesday.",
            id="en-closed",
        ),
        pytest.param(
            "es", OPEN, REASON_BUSY,
            "Lo sentimos, Maria. El caso n.º {id} está tardando más de lo que te dijimos: hay más trabajo de lo "
            "habitual. Una persona te responderá en unos 15 minutos.",
            id="es-open",
        ),
        pytest.param(
            "es", CHRISTMAS, REASON_CLOSED,
            "Lo sentimos, Maria. El caso n.º {id} está tardando más de lo que te dijimos: hoy cerramos por "
            "Christmas Day. Una persona te responderá antes de las 10:15 del domingo.",
            id="es-holiday",
        ),
        pytest.param(
            "de", NIGHT, REASON_CLOSED,
            "Entschuldige, Maria – Fall Nr. {id} dauert länger als gesagt: wir haben gerade geschlossen. "
            "Eine Person antwortet dir bis morgen, Dienstag, 08:15 Uhr.",
            id="de-closed",
        ),
        pytest.param(
            "fr", OPEN, REASON_CLOSING,
            "Désolés, Maria : le dossier n° {id} prend plus de temps que prévu, car nous fermons pour aujourd'hui. "
            "Une personne vous répondra d'ici environ 15 minutes.",
            id="fr-closing",
        ),
        pytest.param(
            "it", NIGHT, REASON_CLOSED,
            "Scusa, Maria. Il caso n. {id} richiede più tempo di quanto ti avevamo detto: ora siamo chiusi. "
            "Una persona ti risponderà entro le 08:15 di domani, martedì.",
            id="it-closed",
        ),
    ],
)  # fmt: skip
def test_the_new_estimate_is_in_the_customers_language(
    texts: CustomerTexts, case: Case, language: str, now: datetime, reason: str, expected: str
) -> None:
    spoken = replace(case, language=language)

    assert update(texts, spoken, now, reason) == expected.format(id=case.id)


def test_the_estimate_keeps_the_deadline_and_the_reason_apart(texts: CustomerTexts, case: Case) -> None:
    # The deadline alone is what the case keeps as its promise's wording, as the dialogue's is.
    told = texts.estimate(replace(case, language="pt"), promise_at(NIGHT), REASON_CLOSED, NIGHT, northwind())
    assert (told.wording, told.reason) == ("até às 08:15 de amanhã, terça-feira", "agora estamos fechados")
    english = texts.estimate(case, promise_at(CHRISTMAS), REASON_CLOSED, CHRISTMAS, northwind())
    assert (english.wording, english.reason) == ("by 10:15 on Sunday", "we are closed for Christmas Day")


def test_a_customer_without_a_name_is_not_named(texts: CustomerTexts, store: CaseStore) -> None:
    nameless = open_case(store, customer_name=None, language="de")
    assert update(texts, nameless, OPEN, REASON_SLOW) == (
        f"Entschuldige – Fall Nr. {nameless.id} dauert länger als gesagt: wir brauchen länger als sonst. "
        "Eine Person antwortet dir in etwa 15 Minuten."
    )


# --- the check-in, the closing message and the apology -----------------------------------------


@pytest.mark.parametrize(
    ("language", "named", "unnamed"),
    [
        ("en", "Hi Maria, is there anything else we can help with on case #{id}? Just reply here.",
         "Is there anything else we can help with on case #{id}? Just reply here."),
        ("es", "Hola, Maria: ¿podemos ayudarte con algo más sobre el caso n.º {id}? Solo tienes que responder "
               "aquí.",
         "¿Podemos ayudarte con algo más sobre el caso n.º {id}? Solo tienes que responder aquí."),
        ("fr", "Bonjour Maria, pouvons-nous vous aider pour autre chose concernant le dossier n° {id} ? Il suffit de "
               "répondre ici.",
         "Pouvons-nous vous aider pour autre chose concernant le dossier n° {id} ? Il suffit de répondre ici."),
    ],
)  # fmt: skip
def test_the_checkin_is_in_the_customers_language(
    texts: CustomerTexts, case: Case, language: str, named: str, unnamed: str
) -> None:
    spoken = replace(case, language=language)
    assert texts.checkin(spoken) == named.format(id=case.id)
    assert texts.checkin(replace(spoken, customer_name="  ")) == unnamed.format(id=case.id)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "We haven't heard back, so we've closed case #{id}. If there's anything else, just write here and "
               "we'll pick it up."),
        ("de", "Wir haben nichts mehr von dir gehört und Fall Nr. {id} daher geschlossen. Wenn noch etwas ist, "
               "schreib einfach hier."),
        ("it", "Non avendo più tue notizie, abbiamo chiuso il caso n. {id}. Se ti serve altro, scrivi qui e ce ne "
               "occupiamo."),
    ],
)  # fmt: skip
def test_the_closing_message_is_in_the_customers_language(
    texts: CustomerTexts, case: Case, language: str, expected: str
) -> None:
    assert texts.close(replace(case, language=language)) == expected.format(id=case.id)


@pytest.mark.parametrize(
    ("language", "reason", "expected"),
    [
        ("en", REASON_CLOSED, "Sorry for the wait, Maria — we were closed for part of the wait. Thanks for bearing "
                              "with us: I'm on case #{id} now."),
        ("es", REASON_SLOW, "Perdona la espera, Maria: tardamos más de lo que te dijimos. Gracias por tu paciencia; "
                            "ya me ocupo del caso n.º {id}."),
        ("pt", REASON_CLOSING, "Desculpe a espera, Maria: fechámos por hoje antes de conseguirmos tratar disto. "
                               "Obrigado pela paciência; estou agora a tratar do caso n.º {id}."),
        # A case never updated has no reason stored: a long queue is the likeliest.
        ("fr", None, "Désolé pour l'attente, Maria : il y a eu plus de demandes que d'habitude. Merci de votre "
                     "patience, je m'occupe maintenant du dossier n° {id}."),
    ],
)  # fmt: skip
def test_the_suggested_apology_is_in_the_customers_language(
    texts: CustomerTexts, case: Case, language: str, reason: str | None, expected: str
) -> None:
    assert texts.apology(replace(case, language=language, delay_reason=reason)) == expected.format(id=case.id)


# --- which language ------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["", "nl", "xx"])
def test_a_case_in_no_switched_on_language_gets_the_main_one(
    texts: CustomerTexts, case: Case, language: str
) -> None:
    other = replace(case, language=language)
    assert texts.language(other) == "en"
    assert texts.checkin(other) == (
        f"Hi Maria, is there anything else we can help with on case #{case.id}? Just reply here."
    )
    assert update(texts, other, NIGHT, REASON_CLOSED).endswith("A person will reply by 8:15 tomorrow, Tuesday.")


def test_a_language_switched_off_falls_back_to_the_brands_main_language(support: SupportConfig, case: Case) -> None:
    spanish_first = CustomerTexts.load(replace(support, languages=replace(support.languages, answer_in=("es", "en"))))
    german = replace(case, language="de")

    assert spanish_first.language(german) == "es"
    assert spanish_first.close(german).startswith(
        f"Como no hemos tenido noticias tuyas, hemos cerrado el caso n.º {case.id}."
    )
    assert update(spanish_first, german, OPEN, REASON_SLOW).endswith("Una persona te responderá en unos 15 minutos.")


# --- the responses themselves ------------------------------------------------------------------------


def domain_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "domain"
    shutil.copytree(DOMAIN, copy)
    return copy


def test_the_desk_refuses_responses_it_cannot_fill(tmp_path: Path, support: SupportConfig) -> None:
    domain = domain_copy(tmp_path)
    desk = domain / "desk.yml"
    desk.write_text(desk.read_text(encoding="utf-8").replace(
        "Hallo {customer_name}, können", "Hallo {first_name}, können"), encoding="utf-8")  # fmt: skip

    with pytest.raises(CustomerTextsError, match=r"utter_watchdog_checkin_named: unknown placeholder \{first_name\}"):
        CustomerTexts.load(support, domain)


def test_the_desk_refuses_a_domain_without_its_responses(tmp_path: Path, support: SupportConfig) -> None:
    domain = domain_copy(tmp_path)
    desk = domain / "desk.yml"
    without = re.sub(r"  utter_watchdog_close:\n(    .*\n)+", "", desk.read_text(encoding="utf-8"))
    desk.write_text(without, encoding="utf-8")

    with pytest.raises(CustomerTextsError, match="'utter_watchdog_close' is sent by the agent desk but missing"):
        CustomerTexts.load(support, domain)


def test_every_desk_response_is_shipped_in_every_language(support: SupportConfig) -> None:
    responses = load_responses(DOMAIN)
    assert set(DESK_RESPONSES) <= set(responses)
    assert [str(missing) for missing in missing_responses(DOMAIN, support.languages.answer_in)] == []


def test_ops_check_lists_a_desk_response_missing_a_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domain = domain_copy(tmp_path)
    desk = domain / "desk.yml"
    text = desk.read_text(encoding="utf-8")
    german = (
        "    - condition: [{type: slot, name: language, value: de}]\n"
        '      text: "Können wir dir bei Fall Nr. {case_id} noch mit etwas anderem helfen? Antworte einfach hier."\n'
    )
    assert german in text
    desk.write_text(text.replace(german, ""), encoding="utf-8")
    line = text[: text.index("  utter_watchdog_checkin:\n")].count("\n") + 1

    assert check_main([str(ROOT / "support.yml"), "--domain", str(domain)]) == 1

    errors = capsys.readouterr().err.splitlines()
    assert errors[0] == (
        f"{desk}:{line}: utter_watchdog_checkin has no 'de' variation "
        "(add one with condition [{type: slot, name: language, value: de}])"
    )
    assert len(errors) == 2 and errors[1].startswith("1 responses missing a language switched on in")
