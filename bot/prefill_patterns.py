"""The patterns bot.prefill reads a message with: one per kind of answer.

Kept apart from the logic so that each reads as a list of the ways customers say a
thing; bot/prefill.py decides what a match means for the case.
"""

from __future__ import annotations

import re


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_NEG = r"(?:n'?t|n’t|\s+not)"
_SENTENCE_END = _rx(r"(?<=[.!?])\s+|\n+")
# Where a clause ends: punctuation, a dash between words, or a word that starts another thought.
_CLAUSE_BREAK = _rx(
    r"\s*(?:[,;:!?()\[\]]|\.(?=\s|$)|\s[-–—]+\s|\b(?:because|cause|cos|coz|but|although|though|and then|unless)\b|"
    r"\bso (?=i\b|we\b|it\b|they\b|now\b|that\b)|"
    r"\band (?=(?:it|it's|its|they|they're|theyre|the|i|i'm|my|this|that|now|also)\b))\s*"
)
# The patterns from here on look alike line by line only because each is a list of words.
_HYPOTHETICAL = _rx(r"\b(?:if|what if|in case|whether|suppose|supposing)\b")
# "if you could help", "if possible": politeness, not a hypothesis.
_POLITE_IF = _rx(r"\bif (?:you|u) (?:can|could|would|don'?t mind)\b|\bif (?:possible|poss|that'?s ok(?:ay)?)\b")
_LEADING_FILLER = _rx(
    r"^(?:(?:and|but|also|plus|because|cause|cos|coz|since|so|as|well|ok|okay|hi|hello|hey|sadly|"
    r"unfortunately)\b[\s,]*)+"
)
_PRONOUN_COPULA = _rx(
    r"^(?:it|they|this|that|these|those|the item|the one|mine)\s*(?:is|are|was|were|'s|’s|'re|’re|s|re)?\s+|^(?:it's|"
    r"its|it’s|they're|theyre|they’re)\s+"
)
_ARTICLE = _rx(r"^(?:the|a|an)\s+")
_TRAILING_PUNCTUATION = " \t.,;:!?-–—"
_LINK = _rx(r"https?://\S*|\bwww\.\S+")
_LEADING_HANDLES = _rx(r"^(?:[@#]\w+[\s,:]*)+")
# What makes a bare number an order number: "order 48213907", "#48213907"; a number
# alone may be a phone number, a postcode or a flight.
# Words right before a number that say it is not an order: "contact number 5632156987",
# "zip code 33026", "driver Suresh: 9958520468".
_NOT_AN_ORDER_BEFORE = _rx(
    r"\b(?:phone|tel|telephone|mobile|cell|call|text|contact|whatsapp|zip(?: code)?|post ?code|area code|flight|train|"
    r"bus|room|seat|account|acct|driver|card|member(?:ship)?|customer|ticket|case)\b\W*(?:\w+\W+)?(?:no\.?|number|#)?\W*$"
)
_ORDER_CUE = _rx(
    r"#|\b(?:orders?|ordered|purchased?|bought|ref|reference|booking|parcel|package|delivery|shipment|tracking|"
    r"item|invoice|receipt|returns?|refund|exchange|cancel\w*|change|check|track\w*|status"
    # the same cues in Spanish, French, German, Portuguese and Italian
    r"|pedidos?|encomendas?|commandes?|bestell\w*|ordin[ei]|paquete|paquet|pakete?|pacco|envio|env[ií]o|"
    r"lieferung|livraison|consegna|entrega|n[uú]mero|num[eé]ro|nummer|numero|rechnung|factura|facture|fattura|fatura)\b"
)

# --- delivery -----------------------------------------------------------------------------
_SAYS_DELIVERED = _rx(
    r"\b(?:says?|said|saying|shows?|showed|showing|marked|claims?|apparently|supposedly|status|tracking|app)\b"
    r"(?:\W+\w+){0,4}?\W+delivered\b"
)
_NOT_RECEIVED = _rx(
    r"\b(?:not here|isn'?t here|is not here|aren'?t here|nowhere|not (?:been )?(?:received|arrived|delivered)|"
    r"never (?:got|get|received|arrived|came|turned up|showed up)|nothing (?:here|arrived|came)|no parcel|no package|"
    r"(?:have|has|did|do)" + _NEG + r"\s+(?:got|get|gotten|received|receive|arrived|see|seen)|"
    r"(?:can'?t|cannot|couldn'?t) find|wasn'?t delivered|but (?:i|we) (?:don'?t|didn'?t|never)|not at my door|"
    r"wrong (?:address|house|door))\b"
)
_TRACKING_STUCK = _rx(
    r"\btracking\b[^.?!]{0,40}?(?:(?:has|have|is|was|did|does)" + _NEG + r"\s+(?:moved|changed|updated|update|moving|"
    r"changing|"
    r"updating|been updated)|stuck|frozen|the same|same (?:status|place)|no (?:updates?|movement|change)|not updat\w*|"
    r"not moving|not moved)"
    r"|\b(?:no|zero) tracking updates?\b|\bstuck (?:in|at) (?:the )?(?:depot|hub|customs|warehouse|sorting)"
)
_DELIVERED_VERB = (
    r"(?:arrived|arrive|come|came|here|received|got|gotten|shipped|dispatched|delivered|been delivered|turned up|"
    r"shown up)"
)
_LATE = _rx(
    r"\b(?<!too )(?<!fee )(?:late|delayed|overdue)\b(?! fee| charge| payment)"
    r"|\bstill (?:(?:not|hasn'?t|haven'?t|has not|have not|isn'?t|aren'?t)\s+(?:been\s+)?" + _DELIVERED_VERB
    + r"|waiting (?:for|on) (?:my|the|our|an?) (?:order|parcel|package|delivery|item|stuff|shoes|clothes)"
    r"|nothing|no sign)\b"
    r"|\b(?:not (?:arrived|here|come|received|delivered) yet|(?:has|have)" + _NEG
    + r"\s+(?:arrived|come|shown up|turned up|received|got)|"
    r"never (?:arrived|came|turned up)(?! back)|should (?:have|'ve) (?:arrived|come|been here)|"
    r"was (?:due|supposed to (?:arrive|come)|meant to (?:arrive|come)|expected)|"
    r"(?:it'?s|it has) been (?:\d+|two|three|four|a few|several) (?:days|weeks))\b"
)

# --- returns ------------------------------------------------------------------------------
_REFUND_STATUS = _rx(
    r"\bwhere(?:'?s| is) (?:my|the) (?:refund|money)\b|\brefund (?:status|still|yet)\b|\bstatus of (?:my|the) refund\b|"
    r"\b(?:have|has|did|do)" + _NEG + r"\s+(?:received|got|gotten|seen|had|get|receive)(?:\s+\w+){0,2}\s+(?:refund|"
    r"money)\b|"
    r"\b(?:still|never|not yet)\s+(?:received|got|gotten|seen|had)?\s*(?:(?:my|the|a|any|no)\s+)?(?:refund|"
    r"money back)\b|"
    r"\bstill waiting (?:for|on) (?:my |the |a )?(?:refund|money)\b|"
    r"\bwhen (?:will|do|can|should) i (?:get|receive|see) (?:my |the )?(?:refund|money)\b|"
    r"\brefund (?:has|have)" + _NEG + r"\s+(?:arrived|come|shown|appeared|been|gone)\b|"
    r"\bno refund yet\b|\bcheck (?:on )?(?:my|the) refund\b"
)
_EXCHANGE = _rx(
    r"\b(?:exchange|exchanging|swap|swapping|"
    r"(?:want|need|like|get|send me|request|have|for) (?:a |an )?(?:new )?replacement|"
    r"replace (?:it|them|this|these)|"
    r"(?:different|bigger|smaller|larger|another) (?:size|colou?r)|size (?:up|down)|in an? (?:smaller|bigger|"
    r"larger) size|"
    r"for an? (?:smaller|bigger|larger|medium|small|large) one)\b"
)
# A return asked for, not one mentioned: "return the jacket", "i'd like to return", "refund me";
# "help with a return" or "my refund is the wrong amount" could be anything.
_RETURN = _rx(
    r"\breturn(?:ing)?\s+(?:it|them|this|these|that|those|the|my|an?|some|both|one|everything)\b"
    r"|\b(?:to|want|wanna|like|need|can i|could i|may i|how do i|how can i|i'?ll)\s+return\b"
    r"|\b(?:want|like|need|get|request|give me|have|issue|process|for)\s+(?:(?:a|an|my|the|full|partial)\s+)*"
    r"(?:refund|money back)\b|\brefund (?:me|it|them|please|pls)\b"
    r"|\bsend(?:ing)? (?:it|them|this|these|that|the \w+(?: \w+)?) back\b|\btake (?:it|them) back\b"
)
_REFUND_WANTED = _rx(r"\b(?:refund|money back)\b")
_RETURN_OR_EXCHANGE_VERB = _rx(r"\b(?:return|returning|send\w* (?:\w+ ){0,2}back|exchange|swap|refund)\b")
_EITHER_OR = _rx(r"\b(?:return|refund|exchange|swap)\w*\s+or\s+(?:an?\s+|to\s+)?(?:return|refund|exchange|swap)")
_POLICY = _rx(r"\b(?:polic(?:y|ies)|how long do i have|how many days)\b")
_RETURN_REASON = _rx(
    r"\b(?:wrong size|too (?:small|big|large|tight|loose|short|long|narrow|wide|heavy)|"
    r"(?:doesn'?t|does not|didn'?t|did not|don'?t|do not|won'?t) (?:fit|suit|work|match)|not (?:fit|fitting)|"
    r"damaged|broken|broke|faulty|defective|ripped|torn|stained|scratched|dented|cracked|smashed|leaking|"
    r"missing (?:parts?|pieces?|screws|buttons?|accessories|a part|a piece)|not as (?:described|pictured|shown|"
    r"advertised)|"
    r"wrong (?:item|colou?r|product|model|one|thing|style)|different (?:from|to|than) (?:the )?(?:picture|photo|"
    r"description|website|pics?)|"
    r"changed my mind|(?:don'?t|do not|didn'?t) (?:like|want|need) (?:it|them|the)|poor quality|bad quality|"
    r"cheaply made|"
    r"fell apart|falling apart|stopped working|not working|arrived late|came late|uncomfortable|itchy|faded|shrunk|"
    r"shrank|"
    r"peeling|fake|counterfeit|looks? (?:cheap|nothing like)|smells?)\b"
)

# --- billing ------------------------------------------------------------------------------
_CHARGED_TWICE = _rx(
    r"\b(?:charged|billed|debited|taken|paid|charging|charge[sd]?\s+me|took\s+(?:the\s+)?(?:money|payment))"
    r"(?:\W+\w+){0,3}?\W+(?:twice|two times|2 times|2x|two separate times)\b"
    r"|\b(?:charged|billed|debited) (?:me )?double\b"
    r"|\bdouble[- ]?(?:charged|charge|charges|billed|payment|payments)\b"
    r"|\b(?:duplicate|duplicated) (?:charges?|payments?|transactions?)\b"
    r"|\b(?:two|2) (?:identical |same )?(?:charges|payments|transactions)\b"
)
_PAYMENT_FAILED = _rx(
    r"\b(?:payment|card|transaction|checkout|paypal|apple pay|google pay|klarna)\b(?:\W+\w+){0,3}?\W+"
    r"(?:failed|fails|failing|declined|rejected|refused|(?:won'?t|didn'?t|doesn'?t|isn'?t|not) (?:go|going|"
    r"went) through|"
    r"(?:wasn'?t|was not|isn'?t|not) accepted)\b"
    r"|\b(?:can'?t|cannot|unable to|couldn'?t|won'?t let me) (?:pay|check ?out|complete (?:the |my )?(?:payment|"
    r"purchase|order))\b"
)
_UNEXPECTED_FEE = _rx(
    r"\b(?:unexpected|extra|hidden|additional|surprise|unknown|mystery) (?:fees?|charges?|surcharges?)\b"
    r"|\b(?:fees?|surcharges?)\b(?:\W+\w+){0,4}?\W+(?:didn'?t|did not|never) (?:expect|agree|authori[sz]e|know)"
)
_INVOICE = _rx(
    r"\b(?:need|want|send|get|request|download|copy of|where(?:'?s| is| can i find)|missing|(?:haven'?t|didn'?t|never) "
    r"(?:got|get|received|receive)|no)\b(?:\W+\w+){0,2}?\W+(?:vat )?(?:invoice|receipt)s?\b"
)
# "the invoice is wrong" is a problem with an invoice, not a request for one.
_INVOICE_DISPUTED = _rx(r"\b(?:wrong|incorrect|dispute|error|mistake|overcharged|too (?:much|high))\b")

# --- account access -----------------------------------------------------------------------
_LOCKED = _rx(
    r"\b(?:account|profile)\s+(?:is\s+|has been\s+|got\s+|was\s+|been\s+|is now\s+)?"
    r"(?:locked|blocked|suspended|disabled|frozen|deactivated|banned)\b|\blocked out\b"
)
_NO_CODE = _rx(
    r"\b(?:verification|security|confirmation|login|log in|sms|text|2fa|two[- ]factor|otp|one[- ]time|authentication|"
    r"6[- ]digit|access)\s+(?:code|pin|passcode)s?\b[^.?!]{0,30}?\b(?:not|never|doesn'?t|didn'?t|isn'?t|hasn'?t|"
    r"won'?t)\b"
    r"|\b(?:not|never|don'?t|didn'?t|haven'?t|can'?t|cannot)\s+(?:getting|receiving|get|receive|got|received)\s+"
    r"(?:the|a|my|any)?\s*(?:verification |security |confirmation |login |sms |text |2fa |otp |one[- ]time )?(?:code|"
    r"pin|otp|text)\b"
    r"|\bno (?:verification |security |confirmation |login |sms |2fa |otp )?code\b"
    r"|\bcode (?:never|doesn'?t|didn'?t|isn'?t|hasn'?t|won'?t|not) (?:arrive|come|arriving|coming|arrived|came|show)"
)
_PASSWORD = _rx(
    r"\b(?:forgot|forgotten|forget|reset|resetting|lost|(?:don'?t|do not) (?:know|remember)|can'?t remember)\s+"
    r"(?:my\s+|the\s+)?password\b|\bpassword reset\b|\breset (?:my |the )?password\b"
)
_CANNOT_LOG_IN = _rx(
    r"\b(?:can'?t|cannot|cant|can not|unable to|couldn'?t|won'?t let me|not able to|doesn'?t let me|"
    r"(?:having )?(?:trouble|problems?|issues?)(?: with)?)\s+(?:log(?:ging)? ?in(?:to)?|login|sign(?:ing)? ?in|signin|"
    r"log(?:ging)? on|"
    r"(?:get(?:ting)? in(?:to)?|access(?:ing)?)\s+(?:my |the |our |your )?(?:account|acc|profile|app))\b"
    r"|\b(?:log ?in|login|sign ?in)\s+(?:is\s+|isn'?t\s+)?(?:not working|doesn'?t work|broken|fails|failed|failing|"
    r"error)\b"
)

# --- orders -------------------------------------------------------------------------------
_CHANGE_FIELD = (
    r"(?:address|size|colou?r|quantity|qty|date|day|postcode|post code|zip code|zip|item|items|delivery|shipping|"
    r"name|phone number|option|slot)"
)
_REQUESTED_CHANGE = _rx(
    r"\b(?:change|changing|update|updating|amend|correct|switch|swap)\b(?:\s+\S+){0,5}?\s+" + _CHANGE_FIELD
    + r"\b(?:\s+\S+){0,4}?\s+(?:to|into)\s+(?!be\b|do\b|make\b|get\b|see\b|know\b|ask\b)\S+"
    r"|\bnew (?:delivery |shipping )?(?:address|postcode|post code|size|colou?r|date|phone number)\b\s*(?:is|:|-|=|"
    r"will be|should be)\s*\S+"
    r"|\b(?:deliver|send|ship)\b(?:\s+\S+){0,4}?\s+to\s+(?:\d+\s+\w+|my (?:work|office|new|other|parents'?|mum'?s|"
    r"mom'?s|dad'?s|neighbou?r'?s))"
)
_CANCEL_BECAUSE = _rx(
    r"\bcancel\w*\b[^.!?]{0,60}?\b(?:because|cause|'cause|cos|coz|bc)\s+(?P<reason>[^.!?;,]+)"
)
# "i can't cancel because the button is greyed out" gives a problem, not a reason.
_CANNOT_CANCEL = _rx(r"\b(?:can'?t|cannot|unable to|won'?t let me|trying to|tried to|how (?:do|can) i)\s+cancel")
_CANCEL_REASON = _rx(
    r"\b(?:changed my mind|change of (?:heart|mind)|(?:ordered|bought|placed)(?: it| this| that| the order| an order)? "
    r"(?:by mistake|by accident|twice|in error)|(?:accidentally|mistakenly) (?:ordered|bought|placed)|"
    r"ordered the wrong|"
    r"wrong (?:size|item|colou?r|address|one)|(?:found|saw|got) (?:it|one|them|something)?\s*cheaper|cheaper elsewhere|"
    r"better (?:price|deal)|(?:don'?t|do not|dont|no longer) (?:need|want) (?:it|them|this|that|the)|not needed|"
    r"no longer needed|taking (?:too|so) long|takes too long|too long to|won'?t (?:arrive|come|get here) (?:in time|"
    r"on time)|"
    r"(?:too|very) late|duplicate order|double order|can'?t afford)\b"
)

# --- products -----------------------------------------------------------------------------
_FAULT = _rx(
    r"\b(?:stopped (?:working|charging|turning on|switching on|connecting|heating|responding|pairing|spinning)|"
    r"stop working|not working|doesn'?t work|does not work|didn'?t work|won'?t work|"
    r"(?:won'?t|doesn'?t|does not|didn'?t|can'?t|cannot|will not) (?:turn on|switch on|start|charge|connect|open|load|"
    r"boil|heat|"
    r"pair|sync|close|install|update|log in|spin|drain|cool|print|hold (?:a )?charge)|"
    r"not (?:charging|turning on|switching on|connecting|heating|loading|responding|pairing|syncing|cooling|printing|"
    r"starting)|"
    r"broke|broken|cracked|cracks|leak|leaks|leaking|leaked|faulty|defective|keeps? (?:crashing|freezing|disconnecting|"
    r"restarting|turning off|switching off|dropping|beeping|failing|logging me out|cutting out)|crash|crashes|crashed|"
    r"crashing|"
    r"freezes|freezing|overheat|overheats|overheating|error|no sound|no power|dead|died|smoke|smoking|sparks?|burnt|"
    r"burning|"
    r"rattles|rattling|noisy|flickers|flickering|glitch|glitches|glitchy|buggy|drains|draining|fell apart|came apart|"
    r"snapped|"
    r"ripped|torn|peeling|tripped|blank screen|black screen|dead pixels?)\b"
)
_LEADING_OWNER = r"^(?:(?:my|the|our|this|that|his|her|a|an|new)\s+)*(?:\w+\s+){0,2}?"
_QUESTION = _rx(
    r"\?|\b(?:how (?:much|many|long|do|does|can|to|big|heavy|tall|wide)|hw much|what(?:'?s| is| are| size| colou?rs?|"
    r" material)|"
    r"wats|whats|wat|which|when (?:will|is|are|do|does)|where (?:can|do|is)|is (?:it|this|that|the|there)|are (?:they|"
    r"these|those|there|the)|"
    r"does (?:it|this|the|that)|do (?:you|they|these|those|i)|can (?:i|you|it)|will (?:it|they|this)|any (?:stock|"
    r"idea)|"
    r"price|prices|priced|cost|costs|size|sizes|sizing|fit|fits|in stock|stock|available|availability|original|"
    r"genuine|authentic|"
    r"fake|expiry|expire|expires|expiration|shelf life|warranty|guarantee|dimensions?|measurements?|weight|material|"
    r"made of|"
    r"ingredients|compatible|waterproof|vegan|batteries|colours?|colors?)\b"
)

# --- complaints ---------------------------------------------------------------------------
# A date that reads after an amount without "on": "£20 yesterday", "£20 last week".
_RELATIVE_DATE = _rx(r"(?:on|in|at|last|this|yesterday|today|the day|\w+ (?:days?|weeks?|months?) ago)\b")
_OUTCOME = _rx(
    r"\b(?:i\s+(?:want|need|expect|demand|would like|'d like|d like|deserve)|i'?m\s+(?:owed|entitled to|asking for)|"
    r"give me|(?:can|could)\s+i\s+(?:get|have)|please\s+(?:give|send)\s+me)\s+"
    r"(?P<outcome>(?:(?:a|an|my|the|some|full|partial|proper|immediate|written|formal)\s+)*"
    r"(?:refund|money back|apology|replacement|compensation|voucher|discount|credit|explanation|call ?back)\b"
    r"(?:(?!\s(?:unless|if|or|otherwise|because|but|asap)\b)[^.!?,;])*)"
)
