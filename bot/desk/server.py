"""Serving the desk: its HTTP server (Slack events, health, metrics, dashboard) or Socket Mode.

``serve`` runs a ``Desk`` (``bot.desk.app``) until stopped: over HTTP, bolt's aiohttp adapter
at ``/slack/events`` (Slack signs every request and bolt checks it), or over Socket Mode when
``SLACK_APP_TOKEN`` is set. The HTTP server also serves ``GET /health``, ``GET /metrics``
(Prometheus, ``bot.desk.metrics``) and ``GET /dashboard`` (``bot.desk.dashboard``); in Socket
Mode these run on a small server of their own on the same host and port.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

from bot.desk import dashboard
from bot.desk.app import Desk
from bot.desk.metrics import CONTENT_TYPE, exposition
from bot.desk.settings import EVENTS_PATH

if TYPE_CHECKING:
    from bot.cases import CaseStore
    from bot.desk.settings import DeskSettings
    from bot.election import Election
    from bot.ops import SupportConfig

log = logging.getLogger(__name__)


def http_app(desk: Desk, *, slack_events: bool = True) -> web.Application:
    """Return the desk's aiohttp application.

    ``POST /slack/events`` (HTTP mode only: ``slack_events``), ``GET /health``, ``GET /metrics``
    (Prometheus text format) and ``GET /dashboard`` (``?days=N``).
    """
    application = web.Application()

    async def events(request: web.Request) -> web.Response:
        try:
            bolt_request = await to_bolt_request(request)
        except (KeyError, TypeError, ValueError):
            # bolt reads the body before checking the signature; a malformed one is no request from Slack.
            log.warning("desk: malformed request to %s dropped", EVENTS_PATH)
            return web.json_response({"error": "malformed request"}, status=400)
        answer = await desk.app.async_dispatch(bolt_request)
        return await to_aiohttp_response(answer)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": desk.leading})

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(exposition, desk.metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def board(request: web.Request) -> web.Response:
        days = dashboard.days_param(request.query)
        page = await asyncio.to_thread(dashboard.render, desk.store, desk.support, desk.clock(), days)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                # Everything is inline and nothing may load from elsewhere.
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            },
        )

    if slack_events:
        application.router.add_post(EVENTS_PATH, events)
    application.router.add_get("/health", health)
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/dashboard", board)
    return application


async def _status_server(desk: Desk) -> web.AppRunner | None:
    """In Socket Mode, serve /health, /metrics and /dashboard on the desk's host and port.

    Slack work matters more than figures: if the port is taken, say so and carry on without.
    """
    runner = web.AppRunner(http_app(desk, slack_events=False), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, desk.settings.host, desk.settings.port).start()
    except OSError as error:
        log.error(
            "desk: cannot serve /metrics and /dashboard on %s:%s (%s); running without them",
            desk.settings.host, desk.settings.port, error,
        )  # fmt: skip
        await runner.cleanup()
        return None
    log.info("desk: /health, /metrics and /dashboard on http://%s:%s", desk.settings.host, desk.settings.port)
    return runner


async def serve(desk: Desk, stop: asyncio.Event) -> None:
    """Run the desk until ``stop``: HTTP mode, or Socket Mode when an app token is set."""
    loops = asyncio.create_task(desk.run_loops(stop), name="desk-loops")
    try:
        if desk.settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            status = await _status_server(desk)
            try:
                handler = AsyncSocketModeHandler(desk.app, desk.settings.app_token)
                await handler.connect_async()
                log.info("desk: connected to Slack over Socket Mode")
                try:
                    await _until(stop, loops)
                finally:
                    await handler.close_async()
            finally:
                if status is not None:
                    await status.cleanup()
        else:
            runner = web.AppRunner(http_app(desk), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, desk.settings.host, desk.settings.port)
            await site.start()
            log.info("desk: listening on http://%s:%s%s", desk.settings.host, desk.settings.port, EVENTS_PATH)
            try:
                await _until(stop, loops)
            finally:
                await runner.cleanup()
    finally:
        stop.set()
        await loops
        await desk.close()


async def _until(stop: asyncio.Event, loops: asyncio.Task[None]) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, loops], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if loops.done() and loops.exception() is not None:
        raise loops.exception()  # type: ignore[misc]


async def main_async(
    settings: DeskSettings, store: CaseStore, support: SupportConfig, election: Election | None = None
) -> None:
    """Build the desk and serve it until SIGTERM or SIGINT (running the loops while ``election`` elects it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    desk = Desk(settings, store, support, election=election)
    await serve(desk, stop)
