"""Custom actions of the FirstReply assistant (run by ``rasa run actions``)."""

from bot.action_domain import install_on_action_server

# Rasa (through FirstReply's launcher) sends the domain once, then names it by its digest.
install_on_action_server()
