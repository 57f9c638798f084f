"""Complaint and hostility signals read from a customer's text.

Pure functions with no Rasa import, shared by the NLU component (which adds the
complaint signal to every parse result) and the actions (which set the case priority).

A complaint is a breach of what the customer expected: something late, missing,
broken, wrong, or a customer who feels ignored. Each cue below carries a weight;
cues combine like independent pieces of evidence, ``1 - prod(1 - w)``, so one weak cue
gives a low score and several cues, or one strong cue, a high one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Pattern

# (pattern, weight). Patterns are matched case-insensitively against the text with
# runs of repeated letters squeezed ("sooo late" reads as "so late").
_BREACH_CUES: tuple[tuple[str, float], ...] = (
    # late / missing
    (r"\b(late|delayed|delay|overdue)\b", 0.35),
    (r"\b(never|still not|hasn'?t|has not|didn'?t|did not|not yet)\b.{0,30}"
     r"\b(arriv\w*|come|came|deliver\w*|receiv\w*|show\w* up|turn\w* up|shipp\w*)", 0.5),
    (r"\b(missing|lost|losing|lose|stolen|disappeared)\b", 0.4),
    (r"\bstill (waiting|nothing|no)\b", 0.45),
    (r"\b(weeks?|days?|months?) (and|with) (nothing|no)\b", 0.4),
    (r"\b(another|yet another|one more) (week|day|month|hour|delay)\b", 0.3),
    (r"\bwithout (my|the|a|any|our) (package|parcel|order|delivery|refund|money|internet|wifi|phone|service|power|"
     r"luggage|bag|card)\b", 0.45),
    (r"\b(no|zero) (internet|wi-?fi|signal|service|connection|power|reply|update)\b", 0.35),
    # broken / wrong
    (r"\b(broken|broke|damaged|defective|faulty|cracked|smashed|ripped|torn|leaking)\b", 0.4),
    (r"\b(doesn'?t|does not|don'?t|won'?t|isn'?t|is not|stopped|not) (work\w*|charg\w*|turn\w* on|load\w*|fit\w*)\b",
     0.35),
    (r"\bwrong (item|size|colou?r|order|address|product|amount)\b", 0.45),
    (r"\b(charged|billed) (me )?(twice|double|two times|again)\b", 0.5),
    (r"\b(overcharged|double charged|unauthori[sz]ed)\b", 0.5),
    # ignored / let down
    (r"\b(no ?(one|body)|nobody)(\s+\w+){0,2}\s+(answer\w*|respond\w*|repl\w*|help\w*|gets back|got back|cares)\b",
     0.55),
    (r"\b(thanks|thank you|cheers) for nothing\b", 0.6),
    (r"\b(ignor\w*|ghosted|no (reply|response|answer))\b", 0.5),
    (r"\b(again|third time|second time|(\d+|several|many|multiple) times)\b", 0.2),
    (r"\b(unacceptable|ridiculous|disgrace\w*|appalling|awful|terrible|horrible|worst|useless|pathetic|joke)\b",
     0.5),
    (r"\b(disappointed|disappointing|frustrat\w*|fed up|sick of|tired of|annoyed|angry|furious|upset)\b", 0.45),
    (r"\b(complain\w*|complaint)\b", 0.5),
    (r"\b(scam|rip ?off|fraud)\b", 0.5),
    (r"\b(refund|money back)\b", 0.2),
    (r"\b(never (again|buy\w*|order\w*|shop\w*)|cancel\w* my account|take my business)\b", 0.45),
)

# Language aimed at the brand or staff; raises priority on its own.
_HOSTILE_CUES: tuple[tuple[str, float], ...] = (
    (r"\b(wtf|f+u+c+k+\w*|sh[i1]t+\w*|crap|bullshit|damn|bloody|idiots?|morons?|stupid|incompetent|clowns?)\b",
     0.6),
    (r"\b(sue|lawyer|legal action|trading standards|ombudsman|report you|chargeback)\b", 0.6),
    (r"\b(post|tell|warn|review)\w*.{0,25}\b(everyone|twitter|x\.com|facebook|tiktok|instagram|reddit|trustpilot|"
     r"review)\b", 0.4),
    (r"!{3,}", 0.3),
)

# The same kinds of cue in the other languages answered (bot/i18n.py), written as customers
# write them: with or without accents. Weights as for the English cues of the same kind.
_BREACH_CUES_ES_FR_DE_PT_IT: tuple[tuple[str, float], ...] = (
    # late / missing
    (r"\b(todav[ií]a no|a[uú]n no|sigue sin|no (me )?ha llegado|no llega|nunca lleg[oó]|toujours pas|"
     r"pas (encore )?(re[çc]u|arriv[ée]e?|livr[ée]e?)|immer noch nicht|noch nicht (da|angekommen|geliefert)|"
     r"nicht angekommen|ainda n[aã]o|n[aã]o chegou|nunca chegou|non (è|e) (ancora )?arrivat[oa]|ancora niente|"
     r"mai arrivat[oa])\b", 0.5),
    (r"\b(perdid[oa]|extraviad[oa]|perdu|verloren|perdid[oa]|pers[oa]|smarrit[oa]|retras[oa]|en retard|versp[äa]tet|"
     r"atrasad[oa]|in ritardo)\b", 0.4),
    (r"\b(semanas?|semaines?|wochen|settimane)\b.{0,25}\b(nada|rien|nichts|niente)\b", 0.4),
    # broken / wrong
    (r"\b(rot[oa]s?|roto|da[ñn]ad[oa]|cass[ée]e?s?|ab[iî]m[ée]e?|kaputt|besch[äa]digt|defekt|partid[oa]|estragad[oa]|"
     r"danificad[oa]|rott[oa]|danneggiat[oa]|difettos[oa])\b", 0.4),
    (r"\b(no funciona|ne (marche|fonctionne) (pas|plus)|funktioniert nicht|geht nicht|n[aã]o funciona|"
     r"non funziona)\b", 0.35),
    (r"\b(cobrad[oa]s? dos veces|cobraron (dos veces|doble)|d[ée]bit[ée]e? deux fois|doppelt abgebucht|"
     r"cobrad[oa]s? duas vezes|addebitat[oa] due volte)\b", 0.5),
    # ignored / let down
    (r"\b(nadie (me )?(responde|contesta|ayuda)|personne ne (r[ée]pond|m'aide)|(keiner|niemand) (antwortet|hilft)|"
     r"ningu[ée]m (responde|ajuda)|nessuno (risponde|mi aiuta))\b", 0.55),
    (r"\b(gracias por nada|merci pour rien|danke f[üu]r nichts|obrigad[oa] por nada|grazie per niente)\b", 0.6),
    (r"\b(inaceptable|inacceptable|inakzeptabel|inaceit[áa]vel|inaccettabile|verg[üu]enza|honte|frechheit|"
     r"vergonha|vergogna|p[ée]sim[oa]|nul(le)?|lamentable|miserabel|schlecht|horr[íi]vel|pessim[oa]|terrible)\b",
     0.5),
    (r"\b(decepcionad[oa]|harto|hart[oa]|d[ée][çc]ue?|marre|entt[äa]uscht|nase voll|desiludid[oa]|fart[oa]|"
     r"delus[oa]|stuf[oa])\b", 0.45),
    (r"\b(queja|reclamaci[oó]n|r[ée]clamation|plainte|beschwer\w*|reclama[çc][aã]o|reclamo)\b", 0.5),
    (r"\b(estafa|arnaque|betrug|burla|golpe|truffa)\b", 0.5),
    (r"\b(nunca m[aá]s|plus jamais|nie wieder|nunca mais|mai pi[uù])\b", 0.45),
)
_HOSTILE_CUES_ES_FR_DE_PT_IT: tuple[tuple[str, float], ...] = (
    (r"\b(mierda|joder|put[oa]s?|idiotas?|in[úu]tiles|merde|putain|connards?|scheisse|schei[ßs]e|idioten|"
     r"porra|merda|caralho|idiotas?|cazzo|stronz[oi]|vaffanculo)\b", 0.6),
    (r"\b(abogado|denuncia|avocat|plainte en justice|anwalt|verbraucherzentrale|advogado|avvocato|denuncia)\b", 0.6),
)

_REPEATS = re.compile(r"(\w)\1{2,}")
_WORDS = re.compile(r"[A-Za-z]{3,}")


def _compile(cues: tuple[tuple[str, float], ...]) -> tuple[tuple[Pattern[str], float], ...]:
    return tuple((re.compile(pattern, re.IGNORECASE), weight) for pattern, weight in cues)


_BREACH = _compile(_BREACH_CUES + _BREACH_CUES_ES_FR_DE_PT_IT)
_HOSTILE = _compile(_HOSTILE_CUES + _HOSTILE_CUES_ES_FR_DE_PT_IT)


@dataclass(frozen=True)
class Signals:
    """What the text says about the customer's state.

    Attributes:
        complaint_score: Evidence, in [0, 1], that expectations were breached.
        hostility: Evidence, in [0, 1], of hostile or escalating language.
    """

    complaint_score: float
    hostility: float

    def is_complaint(self, threshold: float = 0.5) -> bool:
        """Return whether the complaint evidence reaches ``threshold``."""
        return self.complaint_score >= threshold


def _combine(weights: list[float]) -> float:
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - weight
    return round(1.0 - remaining, 3)


def _shouting(text: str) -> float:
    words = _WORDS.findall(text)
    if len(words) < 3:
        return 0.0
    upper = sum(1 for word in words if word.isupper())
    return 0.4 if upper / len(words) >= 0.6 else 0.0


def read_signals(text: str | None) -> Signals:
    """Score a customer message for complaint and hostility cues.

    Args:
        text: The message as the customer wrote it (``None`` or empty scores 0).

    Returns:
        The two scores, each in [0, 1].
    """
    if not text:
        return Signals(0.0, 0.0)
    squeezed = _REPEATS.sub(r"\1\1", text)
    breach = [weight for pattern, weight in _BREACH if pattern.search(squeezed)]
    hostile = [weight for pattern, weight in _HOSTILE if pattern.search(squeezed)]
    shouting = _shouting(text)
    if shouting:
        hostile.append(shouting)
    hostility = _combine(hostile)
    # Hostile language is itself a sign that something went wrong for the customer.
    if hostility:
        breach.append(hostility / 2)
    return Signals(complaint_score=_combine(breach), hostility=hostility)
