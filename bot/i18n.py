"""The customer's language: telling which one a message is in, and saying things in it.

Two jobs, both done by well-kept libraries rather than by hand:

- ``detect_language``: lingua (``lingua-language-detector``) tells the language of a message,
  short and informal ones included; a channel or profile locale (Telegram's
  ``language_code``, Slack's locale) is a hint that settles what the text alone cannot.
  ``reply_language`` turns that into the language to answer in: the message's own when it is
  switched on in support.yml, else the closest switched-on one, with the reason kept so the
  case can say the message was not understood as written. Lingua reads letter sequences, so
  on a few casual words it often prefers a neighbour ("reset my password pls" as German);
  the message's function words ("my", "the", "que", "und") are a second, independent
  witness that settles short and unclear messages.
- ``promise_wording`` and ``format_amount``: Babel formats clock times, weekdays, dates,
  durations and amounts for the customer's locale; the sentences around them are the
  ``utter_promise_*`` responses in domain/languages.yml, so ops edit them in YAML.

English keeps the wording ``bot.eta`` computes, word for word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton, format_time, format_timedelta
from babel.numbers import format_currency, format_decimal

if TYPE_CHECKING:
    from lingua import LanguageDetector

    from bot.eta import Promise
    from bot.eta.calendar import BusinessCalendar

DEFAULT_LANGUAGE = "en"
# The languages FirstReply has responses and training examples for; support.yml switches
# on some or all of them.
# What the NLU's language guard (``bot.nlu.language_guard``) adds to every parse result: the
# language to answer in, and the whole reading (``Reply.as_dict``). Here, so that the action
# server reads them without importing the NLU component (and Rasa's engine with it).
LANGUAGE_KEY = "language"
DETECTION_KEY = "language_detection"
KNOWN_LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de", "pt", "it")
# Languages lingua also weighs, so that a message in one of them is recognised as "not
# switched on" instead of being read as its nearest known neighbour (Dutch as German,
# Catalan as Spanish, Romanian as Italian).
OTHER_LANGUAGES: tuple[str, ...] = (
    "nl", "ca", "ro", "pl", "sv", "tr", "id", "ru", "uk", "ar", "zh", "ja", "ko", "he", "el", "hi", "th",
)
# The locale a language is formatted in when the channel gives no region.
DEFAULT_LOCALES: Mapping[str, str] = {
    "en": "en_GB", "es": "es_ES", "fr": "fr_FR", "de": "de_DE", "pt": "pt_PT", "it": "it_IT",
}
NAMES: Mapping[str, str] = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese", "it": "Italian",
    "nl": "Dutch", "ca": "Catalan", "ro": "Romanian", "pl": "Polish", "sv": "Swedish", "tr": "Turkish",
    "id": "Indonesian",
}

# Lingua's confidence (0..1, over the languages above) at which a message is taken to be in
# its likeliest language. Below it, a message of fewer than SHORT_WORDS words says too
# little to switch language on ("ok", "AC-2291734", "thanks"); a longer one is unclear or
# mixed.
CONFIDENT = 0.5
SHORT_WORDS = 4
# A message of fewer than SHORT_WORDS words switches language on lingua's word alone only at
# this confidence ("helloooo" reads as Italian at 0.57, "okk" as Dutch at 0.76); below it,
# its function words must agree.
SHORT_CONFIDENT = 0.85
# How much confidence the locale hint's language needs to be chosen over the likeliest.
HINT_SUPPORT = 0.1

REASON_DETECTED = "detected"
REASON_HINT = "locale hint"
REASON_KEPT = "too short to tell"
REASON_UNCLEAR = "unclear or mixed"
REASON_NOT_ON = "not switched on"

# Each switched-on language's most frequent function words, greetings and thanks, lower
# case, accented and as typed without accents. A word several languages share counts for
# each, so it decides nothing on its own; single letters are left out but for a few that only
# one or two of the languages use as words.
FUNCTION_WORDS: Mapping[str, frozenset[str]] = {
    code: frozenset(words.split()) for code, words in {
        "en": "the and is are was were to of my me you your it its this that for with not i im ive "
              "have has had what why how when where who do does did don doesn didn can cant won isn "
              "wasn aren just be been please pls plz thanks thank thx hi hello hey bye yes any at on "
              "from get got will would could should but or we they there still again ok okay lol u "
              "ur he she our us about if all out up by after off then than now being",
        "es": "el la los las de del al que y en un una unos por para con es mi mis me se lo le les "
              "pero muy está esta estoy están hola gracias cuando cómo como qué porque tengo "
              "tiene hay ya sí su sus nos este eso esto buenos buenas adiós favor puedo puede "
              "podeis podéis hacer no usted ustedes",
        "fr": "le la les de des du et est un une je j pas pour avec mon ma mes vous votre vos que qui "
              "ne sur ce c ça ca il elle au aux n oui non bonjour bonsoir salut merci revoir très "
              "tres suis ai mais d l qu nous cette été",
        "de": "der die das und ist nicht ich mit für fur ein eine einen auf mein meine sie es zu den "
              "dem von bitte danke hallo wie was warum aber auch noch kann ja nein habe hat bin wir "
              "ihr sind guten tschüss schon nur mir mich im bei wo wann keine kein",
        "pt": "o os as do da dos das de que e não nao um uma para com meu minha é está estou obrigado "
              "obrigada olá ola oi por em no na nos nas você voce sim boa bom tchau isso mas já ao "
              "pelo pela tem podem mim",
        "it": "il lo gli le di che e non un una uno per con mio mia miei è sono ciao grazie del della "
              "dei nel nella ho ha ma anche questo questa sto mi ti si ci buongiorno buonasera prego "
              "perché perche come cosa al alla da no",
    }.items()
}

# Handles, e-mail addresses, links, hashtags and digits say nothing about the language.
_NOISE = re.compile(r"(\S+@\S+|@\w+|#\w+|https?://\S+|www\.\S+|\S*\d\S*)")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class Detection:
    """What the text of one message says about its language.

    Attributes:
        language: The likeliest language (ISO 639-1), or None when the text says too little.
        confidence: Lingua's confidence in it (0 when ``language`` is None).
        ranking: Every weighed language with its confidence, likeliest first.
        words: How many words the text had once handles, links and digits are left out.
        function_words: For each switched-on language with any, how many of the text's words
            are among its ``FUNCTION_WORDS``.
    """

    language: Optional[str]
    confidence: float
    ranking: tuple[tuple[str, float], ...]
    words: int
    function_words: tuple[tuple[str, int], ...] = ()

    def function_word_leader(self, languages: Sequence[str]) -> Optional[str]:
        """Return the one language of ``languages`` with more function words in the text than any other, if any."""
        counts = sorted(((count, code) for code, count in self.function_words if code in languages), reverse=True)
        if not counts or (len(counts) > 1 and counts[1][0] == counts[0][0]):
            return None
        return counts[0][1]


@dataclass(frozen=True)
class ReplyLanguage:
    """The language to answer a message in, and why.

    Attributes:
        code: A switched-on language, or None to keep the conversation's language.
        understood: False when the message was unclear, mixed or in a language that is not
            switched on: the customer is told a person will read it as written.
        detected: What the message itself looked like (None when too short to tell).
        reason: One of the ``REASON_*`` constants, kept on the case.
    """

    code: Optional[str]
    understood: bool
    detected: Optional[str]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Return the parse-result form (``language_detection``)."""
        return {"code": self.code, "understood": self.understood, "detected": self.detected, "reason": self.reason}


def tagged_language(metadata: Any) -> Optional[str]:
    """Return the language a training example's metadata tags it with (``{"intent": {"language": "es"}}``).

    Rasa puts an intent block's ``metadata`` (data/nlu/languages/) under ``intent``; an
    untagged example is in the brand's main language.
    """
    tagged = (metadata.get("intent") or {}).get("language") if isinstance(metadata, dict) else None
    return str(tagged) if tagged else None


def language_code(value: Any) -> Optional[str]:
    """Return the ISO 639-1 part of a locale or language tag (``pt-BR`` -> ``pt``), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    code = re.split(r"[-_]", value.strip())[0].lower()
    return code if re.fullmatch(r"[a-z]{2,3}", code) else None


@lru_cache(maxsize=1)
def _detector() -> "LanguageDetector":
    """Build lingua's detector once per process (its models load lazily, per language)."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
                 for code in (*KNOWN_LANGUAGES, *OTHER_LANGUAGES)]
    return LanguageDetectorBuilder.from_languages(*languages).build()


# Lingua loads a language's models when a text first needs them (by script, and by the n-gram
# lengths a text of that size uses): one sentence in each script family that has models loads
# what any later message needs. A two-word text left most of them to the first customer (1.7 s).
WARM_UP_TEXTS = (
    "Every language model is loaded now, before the first customer writes",
    "Все языковые модели загружены заранее",
    "所有语言模型都已提前加载。配送はいつですか",
)


def warm_up_detector() -> None:
    """Load lingua's language models now rather than on the first messages (about 3 s, 380 MB)."""
    for text in WARM_UP_TEXTS:
        _detector().compute_language_confidence_values(text)


@lru_cache(maxsize=4096)
def detect_language(text: Optional[str]) -> Detection:
    """Return what ``text`` says about its language (lingua, over the weighed languages).

    Kept for the last few thousand texts: the intent classifier and the language guard
    both ask about each message.
    """
    cleaned = _NOISE.sub(" ", text or "")
    words = [word.lower() for word in _WORD.findall(cleaned)]
    if not words:
        return Detection(None, 0.0, (), 0)
    values = _detector().compute_language_confidence_values(cleaned)
    ranking = tuple((value.language.iso_code_639_1.name.lower(), float(value.value)) for value in values)
    best, confidence = ranking[0] if ranking else (None, 0.0)
    marks = ((code, sum(word in vocabulary for word in words)) for code, vocabulary in FUNCTION_WORDS.items())
    return Detection(best, confidence, ranking, len(words), tuple((code, n) for code, n in marks if n))


def reply_language(
    detection: Detection, switched_on: Sequence[str], hint: Optional[str] = None
) -> ReplyLanguage:
    """Choose the language to answer in.

    Args:
        detection: What the message's text says (``detect_language``).
        switched_on: The languages support.yml switches on, the brand's main one first.
        hint: The channel's or profile's locale for the customer, if any.

    Returns:
        - a confident detection of a switched-on language: that language, when the message
          has SHORT_WORDS words or more, is read at SHORT_CONFIDENT, or its function words
          agree;
        - a short message that says too little: the hint's language when switched on, else
          the language lingua and the function words agree on, else no change (the
          conversation keeps its language);
        - a message whose likeliest language is the hint's or close to it: the hint's;
        - a longer message lingua is unsure of: the switched-on language with the most
          function words in it (where lingua ranks another first: the brand's main language,
          or another with two or more), else English when lingua ranks it first (casual English is
          often read with little confidence: "fix ur app pls");
        - a message confidently in a language that is not switched on, or a longer unclear
          or mixed one: not understood, answered in the closest switched-on language (the
          hint's, else the switched-on language lingua ranks highest).
    """
    on = [code for code in switched_on if code]
    hinted = language_code(hint)
    hinted = hinted if hinted in on else None
    scores = dict(detection.ranking)
    best = detection.language
    short = detection.words < SHORT_WORDS
    leader = detection.function_word_leader(on)
    confident = detection.confidence >= CONFIDENT
    if best in on and confident and (not short or detection.confidence >= SHORT_CONFIDENT or leader == best):
        return ReplyLanguage(best, True, best, REASON_DETECTED)
    if short and (best in on or best not in scores or detection.confidence < SHORT_CONFIDENT):
        if hinted:
            return ReplyLanguage(hinted, True, None, REASON_HINT)
        if leader is not None and leader == best:
            return ReplyLanguage(best, True, best, REASON_DETECTED)
        return ReplyLanguage(None, True, None, REASON_KEPT)
    if hinted and (best == hinted or scores.get(hinted, 0.0) >= max(HINT_SUPPORT, detection.confidence / 2)):
        return ReplyLanguage(hinted, True, best, REASON_HINT)
    if not confident and leader is not None and (leader in (best, on[0]) or dict(detection.function_words)[leader] > 1):
        return ReplyLanguage(leader, True, best, REASON_DETECTED)
    if not confident and best == DEFAULT_LANGUAGE and best in on:
        return ReplyLanguage(best, True, best, REASON_DETECTED)
    closest = hinted or max(on, key=lambda code: (scores.get(code, 0.0), code == on[0]))
    reason = REASON_NOT_ON if best not in on and confident else REASON_UNCLEAR
    return ReplyLanguage(closest, False, best, reason)


def message_language(text: Optional[str], metadata: Any, languages: Sequence[str] = KNOWN_LANGUAGES) -> Optional[str]:
    """Return the language a message is read in by the NLU: the reply language, None when too short to tell.

    Args:
        text: The message.
        metadata: The message's metadata (the channel's locale hint is read from it).
        languages: The languages to choose among.
    """
    hint = first_present(metadata.get(key) for key in LOCALE_KEYS) if isinstance(metadata, dict) else None
    return reply_language(detect_language(text), languages, hint).code


# Where channels put the customer's locale in a message's metadata (bot.constants.LANGUAGE_METADATA_KEYS).
LOCALE_KEYS = ("language", "language_code", "locale")


# --- saying things in the customer's language ------------------------------------------


def locale_for(language: str, hint: Optional[str] = None) -> Locale:
    """Return the Babel locale for ``language``: the hint's region when it names one (``pt-BR``)."""
    if hint and language_code(hint) == language:
        try:
            return Locale.parse(hint.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            pass
    return Locale.parse(DEFAULT_LOCALES.get(language, language))


def variation_text(responses: Mapping[str, Any], response: str, language: Optional[str]) -> Optional[str]:
    """Return the text of ``response`` in ``language``, as Rasa would choose it.

    The variation whose condition is ``slot language == <language>``, else the first
    variation without a condition (the brand's main language).

    Args:
        responses: The domain's ``responses`` mapping.
        response: The response's name.
        language: The language to pick; None for the unconditioned variation.
    """
    default = None
    for variation in responses.get(response) or []:
        if not isinstance(variation, Mapping) or not variation.get("text"):
            continue
        conditions = variation.get("condition") or []
        if not conditions:
            default = default if default is not None else str(variation["text"])
        elif language and any(
            isinstance(c, Mapping) and c.get("name") == LANGUAGE_SLOT and c.get("value") == language
            for c in conditions
        ):
            return str(variation["text"])
    return default


LANGUAGE_SLOT = "language"


def say_duration(minutes: int, locale: Locale) -> str:
    """Return a duration for a promise, in words: "20 minutos", "2 Stunden", "1 ora"."""
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{format_timedelta(timedelta(hours=hours), threshold=1, locale=locale)} " \
               f"{format_timedelta(timedelta(minutes=rest), threshold=1, locale=locale)}"
    return format_timedelta(timedelta(minutes=minutes), threshold=1, locale=locale)


def say_moment(local_now: datetime, moment: datetime, locale: Locale, phrases: "Phrases") -> str:
    """Say a moment relative to ``local_now``, in ``locale``: "9:30 mañana, martes"."""
    clock = format_time(moment, "short", locale=locale)
    weekday = format_date(moment.date(), "EEEE", locale=locale)
    days_ahead = (moment.date() - local_now.date()).days
    if days_ahead == 0:
        return phrases.say("utter_promise_today", time=clock)
    if days_ahead == 1:
        return phrases.say("utter_promise_tomorrow", time=clock, weekday=weekday)
    if days_ahead < 7:
        return phrases.say("utter_promise_weekday", time=clock, weekday=weekday)
    day = format_skeleton("MMMMEEEEd", moment, locale=locale)
    return phrases.say("utter_promise_date", time=clock, date=day)


@dataclass(frozen=True)
class Phrases:
    """The domain's responses in one language, for sentences composed in code."""

    responses: Mapping[str, Any]
    language: str

    def say(self, response: str, **values: Any) -> str:
        """Return ``response`` in this language with ``values`` filled in (``{name}`` placeholders)."""
        text = variation_text(self.responses, response, self.language)
        if text is None:
            raise KeyError(f"no response {response} in the domain")
        return text.format(**values)


def promise_wording(
    promise: "Promise",
    now: datetime,
    calendar: "BusinessCalendar",
    responses: Mapping[str, Any],
    language: Optional[str],
    hint: Optional[str] = None,
) -> str:
    """Return the promise said in ``language``, from the same facts ``bot.eta`` worded in English.

    The deadline, whether the brand is open, until when and why it is closed are read from
    the promise and the calendar; clock times, weekdays, dates and durations are formatted by
    Babel; the sentences around them are the ``utter_promise_*`` responses.

    Args:
        promise: The promise ``bot.eta`` made.
        now: When it was made; timezone-aware.
        calendar: The brand's business hours.
        responses: The domain's responses.
        language: The customer's language; English (or None) keeps ``promise.wording``.
        hint: The channel's locale, for its region (``pt-BR``).
    """
    if not language or language == DEFAULT_LANGUAGE:
        return promise.wording
    when = deadline_wording(promise, now, responses, language, hint)
    if promise.open_now:
        return when
    phrases = Phrases(responses, language)
    holiday = closed_for(promise, now, calendar)
    if holiday:
        return phrases.say("utter_promise_closed_for", when=when, holiday=holiday)
    zone = promise.deadline.tzinfo
    opening = calendar.next_opening(now).astimezone(zone)
    if opening.date() == now.astimezone(zone).date():
        return phrases.say("utter_promise_opens_at", when=when,
                           time=format_time(_ceil_minute(opening), "short", locale=locale_for(language, hint)))
    return phrases.say("utter_promise_closed_now", when=when)


# In ``bot.eta``'s English wording of a deadline set while closed ("by 8:15 tomorrow,
# Monday — we are closed now"), what comes before this is the deadline, after it why.
WORDING_REASON = " — "


def deadline_wording(
    promise: "Promise", now: datetime, responses: Mapping[str, Any], language: Optional[str], hint: Optional[str] = None
) -> str:
    """Return only the deadline of the promise in ``language``: "within about 20 minutes", "bis morgen, ...".

    What ``promise_wording`` says, without why the brand is closed (for a sentence that
    gives its own reason, like the watchdog's new estimate). English (or None) keeps the
    deadline part of ``promise.wording``.
    """
    if not language or language == DEFAULT_LANGUAGE:
        return promise.wording.partition(WORDING_REASON)[0]
    locale = locale_for(language, hint)
    phrases = Phrases(responses, language)
    local_now = now.astimezone(promise.deadline.tzinfo)
    elapsed = promise.deadline - now
    if promise.open_now and elapsed == timedelta(minutes=promise.business_minutes):
        minutes = max(1, round(elapsed.total_seconds() / 60))
        return phrases.say("utter_promise_within", duration=say_duration(minutes, locale))
    moment = say_moment(local_now, _ceil_minute(promise.deadline), locale, phrases)
    return phrases.say("utter_promise_by", moment=moment)


def closed_for(promise: "Promise", now: datetime, calendar: "BusinessCalendar") -> Optional[str]:
    """Return the holiday the brand is closed for when the promise was made at ``now``, if any."""
    if promise.open_now:
        return None
    return calendar.holidays.get(now.astimezone(promise.deadline.tzinfo).date())


def _ceil_minute(moment: datetime) -> datetime:
    if moment.second or moment.microsecond:
        return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return moment


def format_amount(amount: float, language: str, currency: Optional[str] = None, hint: Optional[str] = None) -> str:
    """Return an amount in the customer's locale: ``1.234,50 €``, ``£1,234.50``, ``1 234,5``."""
    locale = locale_for(language, hint)
    if currency:
        return format_currency(amount, currency, locale=locale)
    return format_decimal(amount, locale=locale)


def format_day(day: date, language: str, hint: Optional[str] = None) -> str:
    """Return a date in the customer's locale, e.g. ``7 dic 2026``, ``07.12.2026``."""
    return format_date(day, "medium", locale=locale_for(language, hint))


def first_present(values: Iterable[Any]) -> Optional[str]:
    """Return the first value that is a language code, for hints read from several places."""
    for value in values:
        code = language_code(value)
        if code:
            return str(value)
    return None


def understood_as_written(parse: Mapping[str, Any]) -> bool:
    """Return whether a parse result (a tracker's ``latest_message``) was understood as written."""
    detection = parse.get(DETECTION_KEY)
    return not isinstance(detection, Mapping) or bool(detection.get("understood", True))
