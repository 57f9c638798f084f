"""``python -m bench.null_webhook PORT``: a server that answers Telegram's webhook at once and does nothing else.

The burst's floor (``bench.first_message --burst --compare front``): what the load generator,
HTTP and Sanic cost on this machine before any work of FirstReply's, measured the same way.
"""

from __future__ import annotations

import sys

from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

app = Sanic("firstreply_null_webhook", configure_logging=False)


@app.post("/webhooks/telegram/webhook")
async def webhook(_: Request) -> HTTPResponse:
    """Answer as the connector answers a stored update, having done nothing."""
    return response.json({"ok": True})


@app.get("/webhooks/telegram")
async def health(_: Request) -> HTTPResponse:
    """Answer the readiness check."""
    return response.json({"status": "ok"})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), access_log=False, workers=1)
