"""A small guess at the language a customer writes in.

Enough to tell English from the languages customers of an English-speaking brand most
often write in, so the case says which language the agent must answer in. A message too
short to judge falls back to what the channel reports (e.g. Telegram's language_code).
"""

from __future__ import annotations

import re

_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the and is it my i you to of a an in for not no have has had was this that with on me are do can "
        "still after where what why when how your our we they be been at from by or but so if just get got".split()
    ),
    "es": frozenset("el la los las y es mi de que en no por para con un una pedido hola gracias está".split()),
    "fr": frozenset("le la les et est mon ma de que en pas pour avec un une je vous bonjour merci commande".split()),
    "de": frozenset("der die das und ist mein meine nicht ich sie zu mit ein eine für bestellung hallo danke".split()),
    "pt": frozenset("o a os as e é meu minha de que em não para com um uma pedido olá obrigado".split()),
    "it": frozenset("il lo la gli le e è mio mia di che in non per con un una ordine ciao grazie".split()),
    "nl": frozenset("de het een en is mijn niet ik je van dat met voor bestelling hallo bedankt".split()),
}
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ru", re.compile(r"[\u0400-\u04FF]")),
    ("ar", re.compile(r"[\u0600-\u06FF]")),
    # Kana before Han: Japanese mixes in Han characters (kanji), often over 30%, and
    # Chinese never uses kana.
    ("ja", re.compile(r"[\u3040-\u30FF]")),
    ("zh", re.compile(r"[\u4E00-\u9FFF]")),
    ("ko", re.compile(r"[\uAC00-\uD7AF]")),
    ("he", re.compile(r"[\u0590-\u05FF]")),
    ("el", re.compile(r"[\u0370-\u03FF]")),
    ("hi", re.compile(r"[\u0900-\u097F]")),
    ("th", re.compile(r"[\u0E00-\u0E7F]")),
)
MIN_EVIDENCE = 2
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def guess_language(text: str | None, reported: str | None = None, default: str = "en") -> str:
    """Return an ISO 639-1 code for ``text``.

    Args:
        text: The customer's message.
        reported: The language the channel reports for the customer, if any.
        default: What to return when nothing can be told.
    """
    fallback = (reported or default).split("-")[0].split("_")[0].lower() or default
    if not text:
        return fallback
    letters = _LETTER.findall(text)
    for code, script in _SCRIPTS:
        if letters and len(script.findall(text)) / len(letters) > 0.3:
            return code
    words = [word.lower() for word in _WORD.findall(text)]
    if len(words) < 3:
        return fallback
    hits = {code: sum(word in stopwords for word in words) for code, stopwords in _STOPWORDS.items()}
    best = max(hits, key=lambda code: (hits[code], code == "en"))
    # One shared little word ("no", "a") is no evidence for another language; two are.
    if hits[best] == 0 or (best != "en" and hits[best] < MIN_EVIDENCE):
        return fallback
    return best
