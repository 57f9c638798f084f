"""Tests for bot.language: the guess at the language a customer writes in."""

from __future__ import annotations

import pytest

from bot.language import guess_language


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi, my order has not arrived and I need it for the weekend", "en"),
        ("Hola, mi pedido no ha llegado todavía y lo necesito", "es"),
        ("Bonjour, ma commande n'est pas arrivée et je suis inquiet", "fr"),
        ("Hallo, meine Bestellung ist noch nicht angekommen, danke", "de"),
        ("Olá, o meu pedido ainda não chegou, obrigado", "pt"),
        ("Ciao, il mio ordine non è ancora arrivato, grazie", "it"),
        ("Hallo, mijn bestelling is nog niet aangekomen, bedankt", "nl"),
    ],
)
def test_latin_script_languages_by_their_common_words(text: str, expected: str) -> None:
    assert guess_language(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Здравствуйте, мой заказ не пришел", "ru"),
        ("مرحبا، طلبي لم يصل بعد", "ar"),
        ("你好，我的订单还没有到", "zh"),
        ("我的包裹丢了", "zh"),
        ("こんにちは、注文がまだ届いていません", "ja"),
        # Everyday Japanese is often a third or more Han characters (kanji): still Japanese.
        ("注文した商品が届きません", "ja"),
        ("配送状況を教えてください", "ja"),
        ("안녕하세요 주문이 아직 도착하지 않았어요", "ko"),
        ("שלום, ההזמנה שלי לא הגיעה", "he"),
        ("Γεια σας, η παραγγελία μου δεν έφτασε", "el"),
        # Script decides even for a single word, and over the reported language.
        ("Спасибо", "ru"),
    ],
)
def test_other_scripts_by_their_characters(text: str, expected: str) -> None:
    assert guess_language(text, reported="en") == expected


def test_a_few_foreign_words_in_english_stay_english() -> None:
    assert guess_language("Order AC-2291734 is not here, the tracking says Москва") == "en"


@pytest.mark.parametrize(
    ("text", "reported", "expected"),
    [
        # Too short to judge (fewer than three words): what the channel reports.
        ("hola", "es-ES", "es"),
        ("hola gracias", "es-ES", "es"),
        ("hi", "pt_BR", "pt"),
        ("hola", "ES", "es"),
        ("Order AC-2291734", "de", "de"),
        # No text at all.
        ("", "de", "de"),
        (None, "fr-CA", "fr"),
        # Long enough but no known word.
        ("xyz qqq zzz", "it", "it"),
        ("12345 67890 11111", "fr", "fr"),
    ],
)
def test_falls_back_to_the_reported_language(text: str | None, reported: str, expected: str) -> None:
    assert guess_language(text, reported) == expected


@pytest.mark.parametrize(
    ("text", "reported"), [("hola", None), ("hi", ""), (None, None), ("xyz qqq zzz", None)]
)
def test_defaults_to_english(text: str | None, reported: str | None) -> None:
    assert guess_language(text, reported) == "en"


def test_default_can_be_changed() -> None:
    assert guess_language("ok", default="nl") == "nl"


def test_reported_language_does_not_override_clear_text() -> None:
    assert guess_language("Hi, my order has not arrived yet and I need it", reported="es-ES") == "en"
