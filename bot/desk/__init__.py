"""The agent desk: a slack-bolt app where agents claim, answer and resolve cases.

``python -m bot desk`` runs it as its own process (see ``bot.desk.app``). It talks to
Rasa only over its HTTP API, to customers only through ``bot.channels.outbound``, and to
the case tables only through ``bot.cases``. Everything it sends goes through the outbox
(``bot.desk.outbox``) so that a crash or an outage loses nothing and doubles nothing.

Nothing heavy is imported here: actions import ``bot.desk.messages`` without Slack.
"""
