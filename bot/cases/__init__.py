"""The case store: the only code that touches the case tables."""

from bot.cases.store import Case, CaseStore, NewCase, TranscriptLine

__all__ = ["Case", "CaseStore", "NewCase", "TranscriptLine"]
