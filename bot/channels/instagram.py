"""Instagram Direct: the professional account's webhook Rasa listens on, DMs and comments taken private.

Everything but a few values is Messenger's (``bot.channels.messenger.MetaDMInput``; the
values are ``bot.channels.meta_output.INSTAGRAM_PLATFORM``: the ``instagram`` webhook
object, the ``comments`` field, 1,000-character texts, ``name``/``username`` from the
profile API, public replies through ``/replies``). Registered in ``credentials.yml``::

    bot.channels.instagram.InstagramInput:
      account_id: ${INSTAGRAM_ACCOUNT_ID}
      token: ${INSTAGRAM_TOKEN}
      app_secret: ${META_APP_SECRET}
      verify_token: ${META_VERIFY_TOKEN}

Rasa serves it at ``/webhooks/instagram/webhook``. Set up: docs/channels/instagram.md.
"""

from __future__ import annotations

from bot.channels.meta_output import InstagramSettings
from bot.channels.messenger import MetaDMInput


class InstagramInput(MetaDMInput):
    """Instagram Direct: an Instagram professional account's DMs and the comments under its posts."""

    settings_class = InstagramSettings
