"""Tests for bot.i18n: which language a message is in, which one to answer in, and Babel's formatting."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from bot.eta import estimate_promise
from bot.eta.estimate import QueueSnapshot
from bot.i18n import (
    Detection,
    REASON_DETECTED,
    REASON_HINT,
    REASON_KEPT,
    REASON_NOT_ON,
    REASON_UNCLEAR,
    detect_language,
    format_amount,
    format_day,
    language_code,
    promise_wording,
    reply_language,
    variation_text,
)
from bot.ops.responses import load_responses
from tests.eta_support import TARGETS, at, northwind

ALL = ["en", "es", "fr", "de", "pt", "it"]
DOMAIN = Path(__file__).resolve().parents[1] / "domain"


def _responses() -> dict:
    return load_responses(DOMAIN)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("merci beaucoup, ma commande est arrivée cassée", "fr"),
        ("Hallo, meine Bestellung ist nicht angekommen", "de"),
        ("olá, quero devolver o produto", "pt"),
        ("hola, mi pedido no ha llegado todavia", "es"),
        ("ciao, il mio ordine non e ancora arrivato", "it"),
        ("where is my parcel?? ordered 2 weeks ago and still nothing", "en"),
        # Casual English read with little confidence is still answered in English.
        ("@115725 fix your app it won't even open", "en"),
    ],
)
def test_a_message_is_answered_in_its_own_language(text: str, language: str) -> None:
    reply = reply_language(detect_language(text), ALL)

    assert (reply.code, reply.understood) == (language, True)


@pytest.mark.parametrize(
    "text",
    [
        # Short, casual English that lingua alone ranks as another language.
        "reset my password pls",
        "transfer me to a human",
        "is it machine washable",
        "i'll be off then",
        "roll a dice for me",
        "convert 5 miles to km",
        "reset password for k.obrien@outlook.ie",
        "@AskAmex It said invalid user name or password",
    ],
)
def test_casual_english_is_not_taken_for_another_language(text: str) -> None:
    detection = detect_language(text)
    assert detection.language != "en"  # what makes the case: lingua alone would switch

    reply = reply_language(detection, ALL)

    # English, or (too short once the address is left out) the conversation's language kept.
    assert reply.code in ("en", None) and reply.understood is True


@pytest.mark.parametrize(
    ("text", "code"),
    [
        # A few letters lingua reads as a language with some confidence: the conversation keeps its own.
        ("helloooo", None),
        ("okk", None),
        ("uh huh", None),
        ("byeeee 👋👋", None),
        # Short messages whose function words agree with lingua switch.
        ("ja genau das", "de"),
        ("boa noite!! 👋", "pt"),
        ("buonasera!! 👋", "it"),
        ("hola", "es"),
    ],
)
def test_a_short_message_switches_only_when_its_words_agree(text: str, code: str | None) -> None:
    reply = reply_language(detect_language(text), ALL)

    assert (reply.code, reply.understood) == (code, True)


def test_function_words_decide_an_unclear_message_only_with_a_clear_leader() -> None:
    detection = detect_language("el altavoz bluetooth no se conecta con mi portatil")
    assert detection.confidence < 0.5  # lingua is unsure
    assert detection.function_word_leader(ALL) == "es"
    assert reply_language(detection, ALL).code == "es"
    # "la" is Spanish, French and Italian alike: no leader among them.
    tie = Detection("it", 0.3, (("it", 0.3), ("es", 0.25)), words=5, function_words=(("es", 1), ("fr", 1), ("it", 1)))
    assert tie.function_word_leader(ALL) is None
    assert tie.function_word_leader(["en", "it"]) == "it"


def test_a_language_not_switched_on_is_answered_in_the_closest_one_and_not_understood() -> None:
    dutch = detect_language("Hallo, mijn bestelling is nog steeds niet aangekomen, wat is er aan de hand?")

    assert dutch.language == "nl"
    reply = reply_language(dutch, ALL)
    assert reply.understood is False
    assert reply.reason == REASON_NOT_ON
    assert reply.code == "de"  # lingua's closest switched-on language to Dutch
    # With only English and Spanish on, a German message is answered in one of those.
    german = reply_language(detect_language("Hallo, meine Bestellung ist nicht angekommen"), ["en", "es"])
    assert (german.understood, german.detected) == (False, "de")
    assert german.code in ("en", "es")


def test_the_locale_hint_decides_the_closest_language_and_a_short_message() -> None:
    russian = reply_language(detect_language("Здравствуйте, мой заказ до сих пор не пришел"), ALL, hint="pt-BR")
    assert (russian.code, russian.understood, russian.detected) == ("pt", False, "ru")

    assert reply_language(detect_language("ok"), ALL) == reply_language(detect_language("ok"), ALL)
    kept = reply_language(detect_language("ok"), ALL)
    assert (kept.code, kept.understood, kept.reason) == (None, True, REASON_KEPT)
    hinted = reply_language(detect_language("ok"), ALL, hint="es_MX")
    assert (hinted.code, hinted.understood, hinted.reason) == ("es", True, REASON_HINT)
    # An order number alone says nothing about the language.
    assert reply_language(detect_language("AC-2291734"), ALL).code is None
    # A hint for a language that is not on is no hint.
    assert reply_language(detect_language("ok"), ["en", "es"], hint="fr-FR").code is None


def test_a_long_message_no_language_clearly_wins_is_unclear() -> None:
    # What lingua says of a message mixing Dutch, English and Spanish words in equal parts.
    mixed = Detection("nl", 0.21, (("nl", 0.21), ("es", 0.2), ("en", 0.18), ("de", 0.1)), words=7)

    reply = reply_language(mixed, ALL)

    assert (reply.code, reply.understood, reply.reason) == ("es", False, REASON_UNCLEAR)
    # The same split with English ahead is read as casual English.
    english = Detection("en", 0.3, (("en", 0.3), ("nl", 0.25)), words=7)
    assert reply_language(english, ALL).understood is True


def test_a_confident_detection_beats_the_hint() -> None:
    reply = reply_language(detect_language("Bonjour, ma commande n'est toujours pas arrivée"), ALL, hint="en-GB")
    assert (reply.code, reply.reason) == ("fr", REASON_DETECTED)


@pytest.mark.parametrize(
    ("tag", "code"), [("pt-BR", "pt"), ("de_AT", "de"), ("EN", "en"), ("", None), (None, None), ("12", None)]
)
def test_language_code_reads_locale_tags(tag: object, code: str | None) -> None:
    assert language_code(tag) == code


def test_variation_text_picks_the_language_then_the_main_one() -> None:
    responses = _responses()
    assert variation_text(responses, "utter_ack_greet", "de") == "Wie kann ich dir heute helfen?"
    assert variation_text(responses, "utter_ack_greet", None) == "How can I help you today?"
    assert variation_text(responses, "utter_ack_greet", "nl") == "How can I help you today?"
    assert variation_text(responses, "utter_no_such_response", "de") is None


def _promise(now: datetime):  # type: ignore[no-untyped-def]
    queue = QueueSnapshot(cases_ahead=0, agents_on_shift=2, recent_handle_minutes=None, recent_samples=0)
    return estimate_promise(now, northwind(), queue, TARGETS)


@pytest.mark.parametrize(
    ("now", "language", "wording"),
    [
        # Open, open until the deadline.
        ("2026-12-07T10:00:00+00:00", "es", "en unos 15 minutos"),
        ("2026-12-07T10:00:00+00:00", "de", "in etwa 15 Minuten"),
        ("2026-12-07T10:00:00+00:00", "fr", "d'ici environ 15 minutes"),
        # Closed at night: tomorrow's opening plus the wait, Babel's clock and weekday.
        ("2026-12-07T22:00:00+00:00", "de", "bis morgen, Dienstag, 08:15 Uhr – wir haben gerade geschlossen"),
        ("2026-12-07T22:00:00+00:00", "it", "entro le 08:15 di domani, martedì: ora siamo chiusi"),
        ("2026-12-07T22:00:00+00:00", "pt", "até às 08:15 de amanhã, terça-feira; agora estamos fechados"),
        # Closed before opening today.
        ("2026-12-07T07:00:00+00:00", "fr", "d'ici 08:15 aujourd'hui — nous ouvrons à 08:00"),
        # Closed for a holiday (and Boxing Day after it): its name, as support.yml gives it.
        ("2026-12-25T12:00:00+00:00", "es", "antes de las 10:15 del domingo; hoy cerramos por Christmas Day"),
        # English keeps bot.eta's own wording.
        ("2026-12-07T22:00:00+00:00", "en", "by 8:15 tomorrow, Tuesday — we are closed now"),
        ("2026-12-07T22:00:00+00:00", None, "by 8:15 tomorrow, Tuesday — we are closed now"),
    ],
)
def test_the_promise_is_said_in_the_customers_language(now: str, language: str | None, wording: str) -> None:
    moment = at(now)
    promise = _promise(moment)

    assert promise_wording(promise, moment, northwind(), _responses(), language) == wording


def test_a_promise_a_week_away_names_the_date_in_the_locale() -> None:
    # Closed from Christmas Eve evening to... a calendar closed for a week puts the date in words.
    holidays = {date(2026, 12, 24) + timedelta(days=n): "Christmas" for n in range(9)}
    moment = at("2026-12-23T19:59:00+00:00")
    queue = QueueSnapshot(cases_ahead=6, agents_on_shift=1, recent_handle_minutes=None, recent_samples=0)
    promise = estimate_promise(moment, northwind(holidays), queue, TARGETS)

    wording = promise_wording(promise, moment, northwind(holidays), _responses(), "de")

    assert wording.startswith("bis Montag, 4. Januar") or "Januar" in wording, wording


def test_amounts_and_dates_follow_the_locale() -> None:
    assert format_amount(1234.5, "de", "EUR") == "1.234,50\xa0€"
    assert format_amount(1234.5, "en", "GBP") == "£1,234.50"
    assert format_amount(1234.5, "pt", "BRL", hint="pt-BR") == "R$\xa01.234,50"
    assert format_amount(1234.5, "fr") == "1\u202f234,5"
    assert format_day(date(2026, 12, 7), "es") == "7 dic 2026"
    assert format_day(date(2026, 12, 7), "it") == "7 dic 2026"


def test_the_warm_up_loads_every_model_a_customer_message_needs() -> None:
    # In a fresh interpreter (lingua keeps its models process-wide): after the warm-up, reading
    # messages in every script the detector weighs loads nothing more (the lazy loads are
    # hundreds of MB; a warm-up on a two-word text left 300 MB of them to the first customer).
    import subprocess
    import sys

    script = """
import resource
from bot.i18n import detect_language, warm_up_detector
warm_up_detector()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for text in ["Hi, where is my parcel? I ordered it last week", "Wo ist mein Paket? Ich habe es bestellt",
             "Zamowienie nie dotarlo do mnie", "где моя посылка", "де моя посилка", "我的包裹在哪里",
             "配送はいつですか", "مرحبا أين طلبي", "שלום איפה ההזמנה", "Γεια σας πού είναι", "नमस्ते मेरा ऑर्डर",
             "สวัสดีครับ", "안녕하세요 주문", "ok"]:
    detect_language(text)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    grown_mb = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parent.parent).stdout.split()[-1])  # fmt: skip
    assert grown_mb < 20
