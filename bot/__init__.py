"""FirstReply: an instant, honest first response for customer DMs, as a Rasa 3.6 plugin."""

__version__ = "0.1.0"
