"""The desk's dashboard in a real browser: ``python -m bot desk`` over a seeded case store.

The desk runs as its own process (HTTP mode, against the fake Slack Web API, its
watchdog switched off so the seeded queue stays as seeded); Debian's Chromium, driven by
Playwright, opens ``/dashboard``. The page must show the live queue earliest promise
first, the tiles and charts, the report's figures, nothing of a customer's name or words,
and load nothing from anywhere but the desk. A screenshot goes to
``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import Browser, Page, expect

from bot.cases import Case, CaseStore, NewCase, TranscriptLine
from bot.constants import priority_rank
from tests.fakes.slack_web_api import TOKEN, FakeDeskSlackAPI
from tests.integration.conftest import local_page
from tests.processes import ROOT, base_env, free_port, start_desk, wait_until_up

pytestmark = pytest.mark.integration

SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
SECRET_NAME = "Zebedee Quux"  # every seeded customer's name: it must never reach the page
SECRET_WORDS = "my secret parcel words"
CHANNELS = ("telegram", "slack_dm", "webchat", "rest")
TYPES = ("order_status", "billing", "refund_return", "product_issue", "account_access", "complaint")


@dataclass
class Seeded:
    url: str
    store_url: str
    now: datetime
    queue_order: list[int]
    waiting: int
    overdue: int
    cases: int


def _open(
    store: CaseStore, number: int, opened: datetime, promise: float, *, channel: str, priority: str = "normal",
    case_type: str = "order_status",
) -> Case:  # fmt: skip
    new = NewCase(
        channel=channel, sender_id=f"customer-{number}", customer_name=SECRET_NAME, case_type=case_type,
        intent_confidence=0.9, answers={"order_number": "AC-2291734"}, summary=SECRET_WORDS,
        transcript=(TranscriptLine("customer", SECRET_WORDS, opened - timedelta(minutes=2)),
                    TranscriptLine("bot", "Hi! What's your order number?", opened - timedelta(minutes=2) + timedelta(seconds=1))),
        language="en", priority=priority, complaint_score=0.0, promised_by=opened + timedelta(minutes=promise),
        promise_wording=f"within about {promise:g} minutes", handoff_key=f"dashboard:{number}",
        metadata={"route": "#support-queue"},
    )  # fmt: skip
    return store.lifecycle.open_case(new, opened)


def seed(store: CaseStore, now: datetime) -> tuple[list[int], int, int, int]:
    """A week of answered cases and a live queue; return the queue's order, waiting, overdue, cases in 7 days."""
    number = 0
    # Six days of history: 3 to 5 cases a day, most answered within their promise, rated.
    for day in range(6, 0, -1):
        for slot in range(3 + day % 3):
            number += 1
            opened = now - timedelta(days=day, hours=slot * 2 + 1)
            case = _open(
                store, number, opened, 20 + 10 * (slot % 2), channel=CHANNELS[number % 4],
                priority=("normal", "high", "normal", "low")[number % 4], case_type=TYPES[number % len(TYPES)],
            )  # fmt: skip
            wait = (4, 9, 17, 26, 45)[number % 5]
            store.lifecycle.claim(case.id, "U0ANA" if number % 2 else "U0BEN", opened + timedelta(minutes=wait - 2))
            store.lifecycle.record_human_reply(case.id, opened + timedelta(minutes=wait))
            store.lifecycle.resolve(case.id, opened + timedelta(minutes=wait + 15), by="U0ANA")
            store.lifecycle.record_followup(case.id, opened + timedelta(minutes=wait + 20), solved=True, rating=(5, 4, 4, 3, 5, 2)[number % 6])
    # The live queue.
    live = []
    specs: list[tuple[float, float, str, str, str]] = [
        # (opened minutes ago, promise minutes, channel, priority, case type)
        (26, 20, "telegram", "urgent", "complaint"),  # overdue by 6 minutes
        (12, 20, "slack_dm", "high", "billing"),  # due in 8
        (5, 20, "webchat", "normal", "order_status"),  # due in 15
        (3, 45, "telegram", "normal", "refund_return"),  # due in 42
        (40, 90, "rest", "low", "product_issue"),  # due in 50
        (9, 30, "telegram", "high", "account_access"),  # claimed, due in 21
    ]
    for ago, promise, channel, priority, case_type in specs:
        number += 1
        live.append(_open(store, number, now - timedelta(minutes=ago), promise, channel=channel, priority=priority,
                          case_type=case_type))  # fmt: skip
    store.lifecycle.claim(live[5].id, "U0ANA", now - timedelta(minutes=4))
    # The billing case got a new estimate (now 20 minutes from now) and was escalated.
    billing = live[1]
    assert store.watch.mark_escalated(billing.id, 0, now - timedelta(minutes=3))
    assert store.watch.update_promise(
        billing.id, 0, now + timedelta(minutes=20), "within about 20 minutes", "busy", now - timedelta(minutes=1)
    )
    current = [store.lookup.get(case.id) for case in live]
    ordered = sorted((c for c in current if c is not None), key=lambda c: (c.promised_by, -priority_rank(c.priority), c.id))
    return [c.id for c in ordered], 5, 1, number


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    work = tmp_path_factory.mktemp("dashboard")
    store_url = f"sqlite:///{work / 'cases.db'}"
    store = CaseStore.from_url(store_url)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    try:
        order, waiting, overdue, total = seed(store, now)
    finally:
        store.dispose()
    shipped = (ROOT / "support.yml").read_text(encoding="utf-8")
    (work / "support.yml").write_text(shipped.replace("\nwatchdog:\n", "\nwatchdog:\n  enabled: false\n"), encoding="utf-8")
    slack = FakeDeskSlackAPI().start()
    slack.add_group("S0AGENTS", ["U0ANA", "U0BEN"])
    slack.add_channel("C0QUEUE", "support-queue")
    port = free_port()
    env = {
        **base_env(),
        "SLACK_DESK_BOT_TOKEN": TOKEN, "SLACK_DESK_SIGNING_SECRET": "dashboard-test-secret",
        "SLACK_API_BASE_URL": slack.base_url, "FIRSTREPLY_DESK_AGENTS": "S0AGENTS",
        "RASA_URL": f"http://127.0.0.1:{free_port()}", "FIRSTREPLY_EVENTS_DB": str(work / "events.db"),
        "FIRSTREPLY_CASE_DB": store_url, "FIRSTREPLY_SUPPORT_FILE": str(work / "support.yml"),
        "FIRSTREPLY_DESK_PORT": str(port), "FIRSTREPLY_DESK_POLL_SECONDS": "0.5",
    }  # fmt: skip
    env.pop("SLACK_APP_TOKEN", None)
    process = start_desk("desk", env, work / "desk.log")
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/health")
        yield Seeded(f"http://127.0.0.1:{port}", store_url, now, order, waiting, overdue, total)
    finally:
        process.stop()
        slack.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with local_page(browser, 1280, 900, 15_000) as opened:
        yield opened


def _texts(page: Page, selector: str) -> list[str]:
    return [str(text).strip() for text in page.locator(selector).all_text_contents()]


def test_the_dashboard_shows_the_live_queue_and_the_figures(desk: Seeded, page: Page) -> None:
    answer = page.goto(f"{desk.url}/dashboard")
    assert answer is not None and answer.status == 200

    expect(page).to_have_title("Northwind Goods · FirstReply desk")
    expect(page.locator("header h1")).to_have_text("Northwind Goods · support desk")
    tiles = dict(zip(_texts(page, ".tile .name"), _texts(page, ".tile .value")))
    assert (tiles["Waiting"], tiles["Claimed"], tiles["Overdue"]) == (str(desk.waiting), "1", str(desk.overdue))
    assert re.fullmatch(r"\d+%", tiles["Promises kept"]) and re.fullmatch(r"\d+%|n/a", tiles["CSAT"])

    # The live queue: the earliest promise first; the overdue one stands out.
    rows = page.locator("#queue tbody tr")
    expect(rows).to_have_count(len(desk.queue_order))
    assert [int(str(rows.nth(i).get_attribute("data-case"))) for i in range(len(desk.queue_order))] == desk.queue_order
    first = rows.first
    expect(first).to_have_class(re.compile(r"\boverdue\b"))
    expect(first.locator("td.promise")).to_have_text(re.compile(r"^overdue by [67] min$"))
    expect(first.locator(".pill")).to_have_text("urgent")
    billing = page.locator("#queue tbody tr", has_text="Billing")
    expect(billing.locator("td").nth(4)).to_have_text("waiting ⚑")  # escalated
    expect(billing.locator("td").last).to_have_text("1")  # one new estimate
    expect(page.locator("#queue tbody tr", has_text="U0ANA").locator("td").nth(4)).to_have_text("claimed")

    # Four charts, drawn inline, and the report's figures.
    charts = page.locator("section svg")
    expect(charts).to_have_count(4)
    for index in range(4):
        assert charts.nth(index).locator("rect").count() > 0
    figures = page.locator("#figures tbody tr").first.locator("td")
    expect(figures.first).to_have_text("overall")
    expect(figures.nth(1)).to_have_text(str(desk.cases))
    assert page.locator("#figures tbody tr", has_text="channel telegram").count() == 1
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_attribute("content", "30")

    content = page.content()
    assert SECRET_NAME not in content and SECRET_WORDS not in content
    assert page.locator("script").count() == 0
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_reload_shows_a_new_case_in_the_queue(desk: Seeded, page: Page) -> None:
    page.goto(f"{desk.url}/dashboard?days=1")
    expect(page.locator(".meta")).to_contain_text("cases opened in the last 1 day")
    before = page.locator("#queue tbody tr").count()
    store = CaseStore.from_url(desk.store_url)
    try:
        fresh = _open(store, 999, datetime.now(timezone.utc), 15, channel="telegram", priority="urgent")
    finally:
        store.dispose()

    page.reload()

    expect(page.locator("#queue tbody tr")).to_have_count(before + 1)
    expect(page.locator(f'#queue tbody tr[data-case="{fresh.id}"] .pill')).to_have_text("urgent")
