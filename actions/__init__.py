"""Custom actions of the FirstReply assistant (run by ``rasa run actions``)."""
