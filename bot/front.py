"""``python -m bot.front``: the front process, what customers' platforms reach first.

Rasa reads a message on its event loop (the sentence encoders, the classifiers: some 40 ms
of CPU), so in a burst a Rasa worker answers its webhooks late: each waits for the messages
being read ahead of it, and with it the typing indicator and the greeting a new customer
should see at once. The front takes that part off the Rasa workers. It listens on the one
public port (``make run``'s 5005) and

- serves every inbox channel's webhook itself (Telegram, Slack DMs, WhatsApp, Messenger,
  Instagram, X): the same connector code as in Rasa, checking the platform's signature,
  storing the update in the inbox *queued*, greeting a new customer at once (the typing
  indicator in Telegram's answer, then the greeting: ``bot.channels.edge``) and answering
  the platform; it never reads a message itself (``WebhookConnector.serve_intake_only``);
- passes every other request (the REST channel, the web chat, Rasa's HTTP API) to Rasa on
  its own port, unchanged, and Rasa's answer back.

Rasa's workers, on that other port, take the queued updates as they have room
(``InboxWorker.pull``, every ``$FIRSTREPLY_PULL_SECONDS``) and answer them as before; the
inbox's guarantees (stored before the platform's 200, handled until Rasa saved it, a
greeting never sent twice) are the database's, so they hold across the processes. The
front loads no model: lingua's language models (to greet in the customer's language) and
the domain's greeting responses. ``make run`` starts it when an inbox channel is configured
(``FIRSTREPLY_FRONT``, docs/configuration.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import urljoin

import aiohttp
from multidict import CIMultiDict
from sanic import Sanic, response
from sanic.compat import Header
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.channels.base import WebhookConnector

log = logging.getLogger(__name__)

# Headers that belong to one connection, not to the request or answer passed on (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})  # fmt: skip
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# The priority (``nice``) ``make run`` gives Rasa's workers behind the front: the front's little
# work per webhook is what a customer waits for, so it comes first when both want a core.
RASA_NICE = 10
# How often Rasa looks for queued updates behind the front (``$FIRSTREPLY_PULL_SECONDS``): every
# update is queued there, so this is the most one waits between the front and an idle Rasa.
PULL_SECONDS_BEHIND_FRONT = 0.05
# Rasa answers the REST channel only once the dialogue ran: no time limit on reading its answer.
RASA_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0)


def inbox_channels(credentials_file: str) -> list[WebhookConnector]:
    """Build the inbox channels ``credentials_file`` lists (as Rasa builds them), each serving intake only.

    Read as ``rasa.core.run`` reads the file, without importing it (it loads Rasa's server and
    TensorFlow: some 350 MB the front never uses). Rasa's own channels (``rest``, ...) are left
    to Rasa.
    """
    from rasa.core.channels import BUILTIN_CHANNELS
    from rasa.shared.utils.common import class_from_module_path
    from rasa.shared.utils.io import read_config_file

    channels: list[WebhookConnector] = []
    for name, credentials in (read_config_file(credentials_file) or {}).items():
        if name in BUILTIN_CHANNELS:
            continue
        channel_class = class_from_module_path(name)
        if not (isinstance(channel_class, type) and issubclass(channel_class, WebhookConnector)):
            continue
        channel = channel_class.from_credentials(credentials)
        channel.serve_intake_only()
        # The domain's wording and support.yml read now, not when the first customer writes.
        channel.greeting_words().for_message("hello", {})
        channels.append(channel)
    return channels


def create_app(channels: list[WebhookConnector], rasa_url: str) -> Sanic:
    """Return the front's app: ``channels``' webhooks served here, everything else passed to ``rasa_url``."""
    app = Sanic("firstreply_front", configure_logging=False)
    upstream = rasa_url.rstrip("/")

    async def never(_: Any) -> None:  # intake only: no update is handed to Rasa in this process
        raise RuntimeError("the front process does not run Rasa")

    async def health(_: Request) -> HTTPResponse:
        return response.json({"status": "ok"})

    for channel in channels:
        prefix = urljoin("/webhooks/", channel.url_prefix())
        app.blueprint(channel.blueprint(never), url_prefix=prefix)
        # Rasa answers its channels' health check with or without the slash; here the slash
        # would otherwise be passed on to Rasa.
        app.add_route(health, f"{prefix}/", methods=["GET"], name=f"health_{channel.name()}", strict_slashes=True)

    @app.listener("before_server_start")
    async def open_session(app: Sanic, _: Any) -> None:
        connector = aiohttp.TCPConnector(limit=200, force_close=False)
        app.ctx.rasa = aiohttp.ClientSession(connector=connector, timeout=RASA_TIMEOUT, auto_decompress=False)

    @app.listener("after_server_stop")
    async def close_session(app: Sanic, _: Any) -> None:
        await app.ctx.rasa.close()

    async def pass_on(request: Request, path: str = "") -> HTTPResponse:
        # Repeated headers stay repeated, both ways.
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        headers["X-Forwarded-For"] = ", ".join(filter(None, [request.headers.get("X-Forwarded-For"), request.ip]))
        url = f"{upstream}{request.path}" + (f"?{request.query_string}" if request.query_string else "")
        try:
            async with app.ctx.rasa.request(request.method, url, headers=headers, data=request.body or None) as answer:
                body = await answer.read()
                kept = Header((k, v) for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-type"})
                content_type = answer.headers.get("Content-Type", "application/octet-stream")
                return response.raw(body, status=answer.status, headers=kept, content_type=content_type)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            log.warning("front: Rasa at %s did not answer %s %s: %s", upstream, request.method, request.path, error)
            return response.json({"error": "the assistant is starting or restarting; try again shortly"}, status=503)

    app.add_route(pass_on, "/", methods=METHODS, name="pass_on_root")
    app.add_route(pass_on, "/<path:path>", methods=METHODS, name="pass_on")
    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the front until stopped (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bot.front", description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", required=True, help="the credentials.yml Rasa serves")
    parser.add_argument("--rasa-url", required=True, help="Rasa's own address, e.g. http://127.0.0.1:5006")
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5005)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bot.i18n import warm_up_detector

    warm_up_detector()  # the greeting's language, from the first customer on
    channels = inbox_channels(args.credentials)
    log.info("front: %s served here, everything else passed to %s",
             ", ".join(c.name() for c in channels) or "no inbox channel", args.rasa_url)  # fmt: skip
    create_app(channels, args.rasa_url).run(host=args.interface, port=args.port, access_log=False, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
