"""The case store: the only code that touches the case tables (``bot.cases.store`` maps its parts)."""

from bot.cases.records import Case, NewCase, OutboxMessage, TranscriptLine
from bot.cases.store import CaseStore

__all__ = ["Case", "CaseStore", "NewCase", "OutboxMessage", "TranscriptLine"]
