"""Tests for bot.ops: loading and checking support.yml."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import pytest

from bot.eta.calendar import END_OF_DAY, BusinessCalendar
from bot.eta.estimate import QueueSnapshot, ServiceTargets, estimate_promise
from bot.ops import (
    Languages,
    SUPPORT_FILE_ENV,
    Brand,
    OpsConfigError,
    PriorityRules,
    Routing,
    check_main,
    default_support_path,
    load_support_config,
)
from bot.clock import NOW_ENV
from bot.ops.config import PublicReply
from tests.eta_support import LONDON, NORTHWIND_HOLIDAYS, NORTHWIND_WEEK

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "support.yml"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ops"
MINIMAL = FIXTURES / "minimal.yml"

NINE_TO_FIVE = ((time(9), time(17)),)
# The clock every test here reads: public holidays are expanded for 2025 to 2028.
TODAY = "2026-12-06T12:00:00+00:00"
MINIMAL_OK = (
    "OK (Test Shop, Europe/London, open 39 hours a week, 2 holidays, 2 routing rules, answers in en)\n"
    "Next closed days: Fri 2026-12-25 Christmas Day; Mon 2026-12-28 Boxing Day (substitute day)"
)
# England's bank holidays of 2025 to 2028: eight a year, and a substitute day for each
# one that falls on a weekend (one in 2026, two in 2027, one in 2028), 36 in all.
SHIPPED_OK = (
    "OK (Northwind Goods, Europe/London, open 74 hours a week, 36 holidays, 4 routing rules, "
    "answers in en, es, fr, de, pt, it)\n"
    "Next closed days: Fri 2026-12-25 Christmas Day; Sat 2026-12-26 Boxing Day; "
    "Mon 2026-12-28 Boxing Day (observed); Fri 2027-01-01 New Year's Day; Fri 2027-03-26 Good Friday"
)


@pytest.fixture(autouse=True)
def _no_support_file_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SUPPORT_FILE_ENV, raising=False)
    monkeypatch.setenv(NOW_ENV, TODAY)


def _edited(tmp_path: Path, edits: dict[int, str | None]) -> Path:
    """Write minimal.yml with lines replaced (None deletes the line); return the path."""
    lines: list[str] = MINIMAL.read_text(encoding="utf-8").splitlines()
    for number in sorted(edits, reverse=True):
        replacement = edits[number]
        lines[number - 1 : number] = [] if replacement is None else replacement.split("\n")
    path = tmp_path / "support.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the shipped file -----------------------------------------------------------


def test_shipped_support_yml_loads_with_the_documented_values() -> None:
    config = load_support_config(SHIPPED)

    assert config.path == SHIPPED
    assert config.brand == Brand(name="Northwind Goods", assistant_name="Northwind's assistant")
    assert config.calendar.timezone == LONDON
    assert config.calendar.weekly == NORTHWIND_WEEK
    # England's bank holidays from the holidays package (country GB, subdivision ENG),
    # the same days the file listed by hand before it named the country.
    assert {
        day: name
        for day, name in config.calendar.holidays.items()
        if date(2026, 12, 1) <= day <= date(2027, 12, 31)
    } == {
        date(2026, 12, 25): "Christmas Day",
        date(2026, 12, 26): "Boxing Day",
        date(2026, 12, 28): "Boxing Day (observed)",
        date(2027, 1, 1): "New Year's Day",
        date(2027, 3, 26): "Good Friday",
        date(2027, 3, 29): "Easter Monday",
        date(2027, 5, 3): "May Day",
        date(2027, 5, 31): "Spring Bank Holiday",
        date(2027, 8, 30): "Late Summer Bank Holiday",
        date(2027, 12, 25): "Christmas Day",
        date(2027, 12, 26): "Boxing Day",
        date(2027, 12, 27): "Christmas Day (observed)",
        date(2027, 12, 28): "Boxing Day (observed)",
    }
    assert min(config.calendar.holidays) == date(2025, 1, 1)
    assert max(config.calendar.holidays) == date(2028, 12, 26)
    assert config.targets == ServiceTargets(
        first_response_minutes=15.0,
        average_handle_minutes=12.0,
        default_agents_on_shift=2,
        min_history_samples=5,
        safety_factor=1.5,
        promise_quantile=0.96,
    )
    assert config.history_window_days == 7
    assert config.priority == PriorityRules(
        complaint_high=0.5,
        complaint_urgent=0.85,
        urgent_case_types=frozenset(),
        high_case_types=frozenset({"billing", "account_access"}),
    )
    assert config.routing == Routing(
        default="#support-queue",
        case_types={"billing": "#support-billing"},
        priorities={"urgent": "#support-leads"},
        languages={"de": "#support-de", "fr": "#support-fr"},
    )
    assert config.languages == Languages(answer_in=("en", "es", "fr", "de", "pt", "it"))


def test_country_holidays_add_up_with_dates_listed_by_hand(tmp_path: Path) -> None:
    path = _edited(
        tmp_path,
        {
            14: "  holidays:\n    country: GB\n    subdivision: SCT\n    open: [2027-01-04]\n"
            "    closed:\n      - {date: 2027-12-24, name: Christmas Eve}\n"
            "      - {date: 2027-01-01, name: Hogmanay's morning after}",
            15: None,
            16: None,
        },
    )

    holidays = load_support_config(path).calendar.holidays

    # Scotland's own bank holidays, from the package...
    assert holidays[date(2027, 1, 2)] == "New Year Holiday"
    assert holidays[date(2027, 11, 30)] == "Saint Andrew's Day"
    assert date(2027, 3, 29) not in holidays  # Easter Monday is England's, not Scotland's
    # ...a day listed open is open, a day listed closed is closed, and its name wins.
    assert date(2027, 1, 4) not in holidays
    assert holidays[date(2027, 12, 24)] == "Christmas Eve"
    assert holidays[date(2027, 1, 1)] == "Hogmanay's morning after"


def test_shipped_holidays_are_closed_and_feed_the_promise() -> None:
    config = load_support_config(SHIPPED)
    christmas_morning = datetime(2026, 12, 25, 11, 0, tzinfo=LONDON)

    promise = estimate_promise(
        christmas_morning, config.calendar, QueueSnapshot(0, 0, None), config.targets
    )

    # Boxing Day (Saturday) is closed too; Sunday opens at 10:00.
    assert promise.deadline_iso() == "2026-12-27T10:15+00:00"
    assert promise.wording == "by 10:15 on Sunday — we are closed for Christmas Day"


@pytest.mark.parametrize(
    ("case_type", "priority", "channel"),
    [
        ("billing", "normal", "#support-billing"),
        ("billing", "urgent", "#support-leads"),
        ("complaint", "urgent", "#support-leads"),
        ("order_status", "high", "#support-queue"),
        ("general", "low", "#support-queue"),
    ],
)
def test_channel_for_prefers_priority_then_case_type(
    case_type: str, priority: str, channel: str
) -> None:
    routing = load_support_config(SHIPPED).routing

    assert routing.channel_for(case_type, priority) == channel


# --- where the file comes from --------------------------------------------------


def test_default_path_is_support_yml_in_the_repo_root() -> None:
    assert default_support_path() == SHIPPED
    assert load_support_config().path == SHIPPED


def test_env_var_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SUPPORT_FILE_ENV, str(MINIMAL))

    assert default_support_path() == MINIMAL
    config = load_support_config()
    assert config.path == MINIMAL
    assert config.brand.name == "Test Shop"


def test_minimal_fixture_loads_exactly() -> None:
    config = load_support_config(MINIMAL)

    assert config.calendar == BusinessCalendar(
        timezone=LONDON,
        weekly={
            0: NINE_TO_FIVE,
            1: NINE_TO_FIVE,
            2: ((time(9), time(12)), (time(13), time(17))),
            3: NINE_TO_FIVE,
            4: NINE_TO_FIVE,
            5: (),
            6: (),
        },
        holidays={
            date(2026, 12, 25): "Christmas Day",
            date(2026, 12, 28): "Boxing Day (substitute day)",
        },
    )
    assert config.routing.priorities == {"urgent": "#support-leads"}


@pytest.mark.parametrize(
    ("monday", "intervals"),
    [
        ('["09:00-17:00"]', ((time(9), time(17)),)),
        ("[09:00-17:00]", ((time(9), time(17)),)),
        ('["13:00-17:00", "08:00-12:30"]', ((time(8), time(12, 30)), (time(13), time(17)))),
        ('["08:00-12:00", "12:00-17:00"]', ((time(8), time(12)), (time(12), time(17)))),
        ('["00:00-24:00"]', ((time(0), END_OF_DAY),)),
        ('["22:00-24:00"]', ((time(22), END_OF_DAY),)),
        ('["9:05 - 17:45"]', ((time(9, 5), time(17, 45)),)),
        ("[]", ()),
    ],
)
def test_time_ranges_are_read(
    tmp_path: Path, monday: str, intervals: tuple[tuple[time, time], ...]
) -> None:
    path = _edited(tmp_path, {7: f"    monday: {monday}"})

    assert load_support_config(path).calendar.weekly[0] == intervals


def test_optional_keys_take_their_defaults(tmp_path: Path) -> None:
    optional_lines = (14, 15, 16, 22, 23, 24, 28, 29, 32, 33)
    path = _edited(tmp_path, dict.fromkeys(optional_lines))

    config = load_support_config(path)

    assert config.calendar.holidays == {}
    assert config.targets == ServiceTargets(15.0, 12.0, 2, min_history_samples=5, safety_factor=1.5)
    assert config.history_window_days == 7
    assert config.priority.urgent_case_types == frozenset()
    assert config.priority.high_case_types == frozenset()
    assert config.routing == Routing(default="#support-queue", case_types={}, priorities={})


# --- mistakes -------------------------------------------------------------------

KNOWN_CASE_TYPES_TEXT = (
    "order_status, change_order, cancel_order, refund_return, billing, account_access, "
    "product_issue, product_question, complaint, general"
)
TARGET_KEYS_TEXT = (
    "first_response_minutes, average_handle_minutes, min_history_samples, safety_factor, "
    "history_window_days, promise_quantile"
)


@pytest.mark.parametrize(
    ("edits", "line", "message"),
    [
        pytest.param(
            {17: "staffng:"},
            17,
            "unknown section in the file; did you mean 'staffing'? (got 'staffng')",
            id="unknown-section",
        ),
        pytest.param(
            {5: "  timezon: Europe/London"},
            5,
            "unknown key in hours; did you mean 'timezone'? (got 'timezon')",
            id="unknown-key-close-match",
        ),
        pytest.param(
            {22: "  colour: blue"},
            22,
            f"unknown key in targets; valid keys are {TARGET_KEYS_TEXT} (got 'colour')",
            id="unknown-key-no-match",
        ),
        pytest.param(
            {5: "  timezone: Europe/Londn"},
            5,
            "hours.timezone: unknown timezone; did you mean 'Europe/London'? (got 'Europe/Londn')",
            id="unknown-timezone",
        ),
        pytest.param(
            {5: "  timezone: Nowhere/Atlantis"},
            5,
            "hours.timezone: unknown timezone; use a name like Europe/London "
            "(got 'Nowhere/Atlantis')",
            id="unknown-timezone-no-match",
        ),
        pytest.param(
            {5: "  timezone:"},
            5,
            "hours.timezone must be text like Europe/London (got None)",
            id="empty-timezone",
        ),
        pytest.param(
            {7: '    monday: ["25:00-18:00"]'},
            7,
            "hours.weekly.monday: 25:00 is not a time of day (got '25:00-18:00')",
            id="hour-25",
        ),
        pytest.param(
            {7: '    monday: ["09:60-17:00"]'},
            7,
            "hours.weekly.monday: 09:60 is not a time of day (got '09:60-17:00')",
            id="minute-60",
        ),
        pytest.param(
            {7: '    monday: ["09:00-24:30"]'},
            7,
            "hours.weekly.monday: 24:30 is not a time of day (got '09:00-24:30')",
            id="past-24",
        ),
        pytest.param(
            {7: '    monday: ["18:00-09:00"]'},
            7,
            "hours.weekly.monday: the range ends before it starts; split hours past midnight "
            "into two ranges, like '22:00-24:00' and '00:00-02:00' the next day "
            "(got '18:00-09:00')",
            id="end-before-start",
        ),
        pytest.param(
            {7: '    monday: ["09:00-09:00"]'},
            7,
            "hours.weekly.monday: the range is empty (got '09:00-09:00')",
            id="empty-range",
        ),
        pytest.param(
            {7: '    monday: ["24:00-24:00"]'},
            7,
            "hours.weekly.monday: 24:00 can only end a range (got '24:00-24:00')",
            id="starts-at-24",
        ),
        pytest.param(
            {7: '    monday: ["9-5"]'},
            7,
            "hours.weekly.monday: a time range looks like '09:00-17:30' (got '9-5')",
            id="not-a-range",
        ),
        pytest.param(
            {7: "    monday: [540]"},
            7,
            "hours.weekly.monday: a time range looks like '09:00-17:30' (got 540)",
            id="sexagesimal-number",
        ),
        pytest.param(
            {7: "    monday: closed"},
            7,
            "hours.weekly.monday must be a list of time ranges like [\"09:00-17:00\"], or [] "
            "(got 'closed')",
            id="day-not-a-list",
        ),
        pytest.param(
            {9: '    wednesday:\n      - "09:00-13:00"\n      - "12:00-17:00"'},
            11,
            "hours.weekly.wednesday: the range overlaps '09:00-13:00' (got '12:00-17:00')",
            id="overlap",
        ),
        pytest.param(
            {9: '    wednesday:\n      - "12:00-17:00"\n      - "09:00-13:00"'},
            11,
            "hours.weekly.wednesday: the range overlaps '12:00-17:00' (got '09:00-13:00')",
            id="overlap-listed-out-of-order",
        ),
        pytest.param(
            {8: '    tuesdy: ["09:00-17:00"]'},
            8,
            "unknown day in hours.weekly; did you mean 'tuesday'? (got 'tuesdy')",
            id="unknown-weekday",
        ),
        pytest.param(
            {13: None},
            6,
            "hours.weekly is missing sunday; use sunday: [] for a day you are closed",
            id="missing-weekday",
        ),
        pytest.param(
            {8: "    monday: []"},
            8,
            "duplicate key in hours.weekly, first on line 7 (got 'monday')",
            id="duplicate-weekday",
        ),
        pytest.param(
            {
                7: "    monday: []",
                8: "    tuesday: []",
                9: "    wednesday: []",
                10: "    thursday: []",
                11: "    friday: []",
            },
            6,
            "hours.weekly has no open hours on any day",
            id="never-open",
        ),
        pytest.param(
            {15: "    - {date: 2026-02-30, name: Christmas Day}"},
            15,
            "hours.holidays: not a valid date, write it as YYYY-MM-DD (got '2026-02-30')",
            id="impossible-date",
        ),
        pytest.param(
            {15: "    - {date: next friday, name: Christmas Day}"},
            15,
            "hours.holidays: not a valid date, write it as YYYY-MM-DD (got 'next friday')",
            id="not-a-date",
        ),
        pytest.param(
            {15: "    - {date: 2026-12-25 10:00:00, name: Christmas Day}"},
            15,
            "hours.holidays: not a valid date, write it as YYYY-MM-DD "
            "(got '2026-12-25 10:00:00')",
            id="date-with-time",
        ),
        pytest.param(
            {16: "    - {date: 2026-12-25, name: Boxing Day}"},
            16,
            "hours.holidays: date already listed on line 15 (got '2026-12-25')",
            id="duplicate-holiday",
        ),
        pytest.param(
            {16: "    - {date: 2026-12-28}"},
            16,
            "hours.holidays is missing the required key 'name'",
            id="holiday-without-name",
        ),
        pytest.param(
            {16: "    - {date: 2026-12-28, nam: Boxing Day}"},
            16,
            "unknown key in hours.holidays; did you mean 'name'? (got 'nam')",
            id="holiday-unknown-key",
        ),
        pytest.param(
            {14: "  holidays:\n    country: XQ", 15: None, 16: None},
            15,
            "hours.holidays.country: unknown country; use an ISO 3166-1 code like GB, US or DE "
            "(got 'XQ')",
            id="unknown-country",
        ),
        pytest.param(
            {14: "  holidays:\n    country: gb", 15: None, 16: None},
            15,
            "hours.holidays.country: unknown country; did you mean 'GB'? (got 'gb')",
            id="country-in-lower-case",
        ),
        pytest.param(
            {14: "  holidays:\n    country: GB\n    subdivision: ENGLAND", 15: None, 16: None},
            16,
            "hours.holidays.subdivision: unknown for GB; did you mean 'ENG'? (got 'ENGLAND')",
            id="unknown-subdivision",
        ),
        pytest.param(
            {14: "  holidays:\n    country: IS\n    subdivision: north", 15: None, 16: None},
            16,
            "hours.holidays.subdivision: unknown for IS; it has none (got 'north')",
            id="subdivision-of-a-country-without",
        ),
        pytest.param(
            {14: "  holidays:\n    subdivision: ENG", 15: None, 16: None},
            15,
            "hours.holidays.subdivision needs a country",
            id="subdivision-without-country",
        ),
        pytest.param(
            {14: "  holidays:\n    country: GB\n    open: [2027-02-30]", 15: None, 16: None},
            16,
            "hours.holidays.open: not a valid date, write it as YYYY-MM-DD (got '2027-02-30')",
            id="open-not-a-date",
        ),
        pytest.param(
            {14: "  holidays:\n    country: GB\n    contry: DE", 15: None, 16: None},
            16,
            "unknown key in hours.holidays; did you mean 'country'? (got 'contry')",
            id="holidays-unknown-key",
        ),
        pytest.param(
            {18: "  default_agents_on_shift: 0"},
            18,
            "staffing.default_agents_on_shift must be a whole number greater than 0 (got 0)",
            id="zero-agents",
        ),
        pytest.param(
            {20: "  first_response_minutes: -5"},
            20,
            "targets.first_response_minutes must be a number greater than 0 (got -5)",
            id="negative-minutes",
        ),
        pytest.param(
            {21: "  average_handle_minutes: twelve"},
            21,
            "targets.average_handle_minutes must be a number greater than 0 (got 'twelve')",
            id="minutes-as-text",
        ),
        pytest.param(
            {21: "  average_handle_minutes: .inf"},
            21,
            "targets.average_handle_minutes must be a number greater than 0 (got inf)",
            id="infinite-minutes",
        ),
        pytest.param(
            {22: "  min_history_samples: 2.5"},
            22,
            "targets.min_history_samples must be a whole number greater than 0 (got 2.5)",
            id="fractional-count",
        ),
        pytest.param(
            {22: "  min_history_samples: yes"},
            22,
            "targets.min_history_samples must be a whole number greater than 0 (got True)",
            id="boolean-count",
        ),
        pytest.param(
            {23: "  safety_factor: 0.8"},
            23,
            "targets.safety_factor must be a number of at least 1 (got 0.8)",
            id="safety-below-one",
        ),
        pytest.param(
            {24: "  history_window_days:"},
            24,
            "targets.history_window_days must be a whole number greater than 0 (got None)",
            id="empty-value",
        ),
        pytest.param(
            {26: "  complaint_high: 1.5"},
            26,
            "priority.complaint_high must be a number from 0 to 1 (got 1.5)",
            id="threshold-above-one",
        ),
        pytest.param(
            {27: "  complaint_urgent: -0.1"},
            27,
            "priority.complaint_urgent must be a number from 0 to 1 (got -0.1)",
            id="threshold-below-zero",
        ),
        pytest.param(
            {26: "  complaint_high: 0.9"},
            27,
            "priority.complaint_urgent must not be below complaint_high (0.9) (got 0.85)",
            id="urgent-below-high",
        ),
        pytest.param(
            {29: "  high_case_types: [biling]"},
            29,
            "priority.high_case_types: unknown case type; did you mean 'billing'? "
            "(got 'biling')",
            id="unknown-case-type",
        ),
        pytest.param(
            {29: "  high_case_types: billing"},
            29,
            "priority.high_case_types must be a list of case types, or [] (got 'billing')",
            id="case-types-not-a-list",
        ),
        pytest.param(
            {29: "  high_case_types: [billing, billing]"},
            29,
            "priority.high_case_types: listed twice (got 'billing')",
            id="case-type-twice",
        ),
        pytest.param(
            {28: "  urgent_case_types: [billing]"},
            29,
            "priority.high_case_types: already urgent (priority.urgent_case_types, line 28) "
            "(got 'billing')",
            id="case-type-urgent-and-high",
        ),
        pytest.param(
            {32: '  case_types: {shipping: "#support-shipping"}'},
            32,
            f"routing.case_types: unknown case type; known case types are "
            f"{KNOWN_CASE_TYPES_TEXT} (got 'shipping')",
            id="routing-unknown-case-type",
        ),
        pytest.param(
            {33: '  priorities: {critical: "#support-leads"}'},
            33,
            "routing.priorities: unknown priority; known priorities are low, normal, high, "
            "urgent (got 'critical')",
            id="routing-unknown-priority",
        ),
        pytest.param(
            {31: "  default: #support-queue"},
            31,
            "routing.default must be a channel name; put it in quotes, since # starts a YAML "
            "comment (got None)",
            id="unquoted-channel",
        ),
        pytest.param(
            {32: "  case_types: {billing: support billing}"},
            32,
            "routing.case_types.billing must be a channel name; put it in quotes "
            "(got 'support billing')",
            id="channel-with-space",
        ),
        pytest.param(
            {30: None, 31: None, 32: None, 33: None},
            1,
            "the file is missing the required section 'routing'",
            id="missing-section",
        ),
        pytest.param(
            {21: None},
            19,
            "targets is missing the required key 'average_handle_minutes'",
            id="missing-key",
        ),
        pytest.param(
            {17: "staffing: 2", 18: None},
            17,
            "staffing must be a mapping of keys to values (got 2)",
            id="section-not-a-mapping",
        ),
        pytest.param(
            {33: '  priorities: {urgent: "#support-leads"}\nbrand:\n  name: Other'},
            34,
            "duplicate key in the file, first on line 1 (got 'brand')",
            id="duplicate-section",
        ),
        pytest.param(
            {2: "  name: Test: Shop"},
            2,
            "invalid YAML: mapping values are not allowed here (got 'name: Test: Shop')",
            id="yaml-syntax",
        ),
        pytest.param(
            {2: "  name: Test\x07Shop"},
            2,
            "invalid YAML: special characters are not allowed (got '\\x07')",
            id="yaml-control-character",
        ),
        pytest.param(
            {2: "  name: !!python/name:os.system x"},
            2,
            "invalid YAML: only plain YAML is allowed, not tags like this "
            "(got 'tag:yaml.org,2002:python/name:os.system')",
            id="yaml-unsafe-tag",
        ),
        pytest.param(
            {7: '    monday: ["09:00-17:00"'},
            8,
            "invalid YAML: expected ',' or ']', but got '<scalar>', while parsing a flow "
            "sequence on line 7 (got 'tuesday: [\"09:00-17:00\"]')",
            id="yaml-unclosed-list",
        ),
    ],
)
def test_mistakes_name_file_line_and_value(
    tmp_path: Path, edits: dict[int, str | None], line: int, message: str
) -> None:
    path = _edited(tmp_path, edits)

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == f"{path}:{line}: {message}"
    assert caught.value.path == path
    assert caught.value.line == line


PUBLIC_X = ('public_replies:\n  x:\n    text: "Please DM us: {dm_link}"\n    no_dm_text: "Please email us."')


def test_public_replies_are_read_per_platform(tmp_path: Path) -> None:
    path = _edited(tmp_path, {33: '  priorities: {urgent: "#support-leads"}\n' + PUBLIC_X})

    replies = load_support_config(path).public_replies
    assert dict(replies) == {"x": PublicReply(enabled=True, text="Please DM us: {dm_link}", no_dm_text="Please email us.")}
    assert load_support_config(MINIMAL).public_replies == {}
    assert load_support_config(SHIPPED).public_replies["x"].enabled is True


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        pytest.param(PUBLIC_X.replace("  x:", "  twitter:"), 35,
                     "unknown key in public_replies; valid keys are x, facebook, instagram (got 'twitter')", id="unknown-platform"),
        pytest.param(PUBLIC_X.replace("    text:", "    txt:"), 36,
                     "unknown key in public_replies.x; did you mean 'text'? (got 'txt')", id="typo-key"),
        pytest.param(PUBLIC_X.replace("{dm_link}", "soon"), 36,
                     "public_replies.x.text must contain {dm_link}, the link that opens a DM to the brand "
                     "(got 'Please DM us: soon')", id="no-link"),
        pytest.param(PUBLIC_X.replace("{dm_link}", "{dm_url}"), 36,
                     "public_replies.x.text: the only {placeholder} allowed is {dm_link} (got 'Please DM us: {dm_url}')",
                     id="wrong-placeholder"),
        pytest.param(PUBLIC_X.replace("Please email us.", "x" * 281), 37,
                     "public_replies.x.no_dm_text is 281 characters as X counts them (links as 23); a public reply "
                     "takes at most 280 (got 'xxxxx", id="too-long"),
        pytest.param(PUBLIC_X.replace("  x:\n", "  x:\n    enabled: maybe\n"), 36,
                     "public_replies.x.enabled must be true or false (got 'maybe')", id="not-a-flag"),
    ],
)
def test_a_mistake_in_public_replies_names_its_line(tmp_path: Path, section: str, line: int, message: str) -> None:
    path = _edited(tmp_path, {33: '  priorities: {urgent: "#support-leads"}\n' + section})

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)
    assert str(caught.value).startswith(f"{path}:{line}: {message}")


def test_error_carries_the_bad_value(tmp_path: Path) -> None:
    path = _edited(tmp_path, {7: '    monday: ["25:00-18:00"]'})

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert caught.value.value == "25:00-18:00"
    assert caught.value.problem == "hours.weekly.monday: 25:00 is not a time of day"


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n"],
    ids=["empty", "blank-lines", "comment-only", "empty-document"],
)
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "support.yml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == (
        f"{path}:1: the file is empty; it needs brand, hours, staffing, targets, priority, routing"
    )
    assert caught.value.value is None


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "support.yml"
    path.write_text("# sections\n- brand\n- hours\n", encoding="utf-8")

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == (
        f"{path}:2: the file must be a mapping of sections "
        "(brand, hours, staffing, targets, priority, routing) (got ['brand', 'hours'])"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == f"{path}: file not found"
    assert caught.value.line is None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "support.yml"
    path.write_bytes(b"brand:\n  name: Caf\xe9\n")

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == f"{path}: not UTF-8 text (invalid continuation byte)"


def test_fixture_file_with_a_mistake() -> None:
    path = FIXTURES / "bad_hours.yml"

    with pytest.raises(OpsConfigError) as caught:
        load_support_config(path)

    assert str(caught.value) == (
        f"{path}:9: hours.weekly.wednesday: the range ends before it starts; split hours past "
        "midnight into two ranges, like '22:00-24:00' and '00:00-02:00' the next day "
        "(got '18:00-09:00')"
    )


# --- python -m bot ops check ------------------------------------------------------


def test_check_main_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([str(MINIMAL)]) == 0

    captured = capsys.readouterr()
    assert captured.out == f"{MINIMAL}: {MINIMAL_OK}\n"
    assert captured.err == ""


def test_check_main_says_when_no_closed_day_is_ahead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(NOW_ENV, "2027-01-01T12:00:00+00:00")

    assert check_main([str(MINIMAL)]) == 0

    assert capsys.readouterr().out.splitlines()[1] == "Next closed days: none listed from today"


def test_check_main_shipped_file_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main([]) == 0

    captured = capsys.readouterr()
    assert captured.out == f"{SHIPPED}: {SHIPPED_OK}\n"
    assert captured.err == ""


def test_check_main_uses_env_var(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(SUPPORT_FILE_ENV, str(MINIMAL))

    assert check_main([]) == 0

    assert capsys.readouterr().out == f"{MINIMAL}: {MINIMAL_OK}\n"


def test_check_main_relative_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO_ROOT)

    assert check_main(["support.yml"]) == 0

    assert capsys.readouterr().out == f"support.yml: {SHIPPED_OK}\n"


def test_check_main_reports_the_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _edited(tmp_path, {7: '    monday: ["25:00-18:00"]'})

    assert check_main([str(path)]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{path}:7: hours.weekly.monday: 25:00 is not a time of day (got '25:00-18:00')\n"
    )


def test_check_main_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yml"

    assert check_main([str(path)]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{path}: file not found\n"


# --- languages ---------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "support.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_languages_and_routing_by_language_are_read(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    config = load_support_config(_write(tmp_path, text))

    assert config.routing.channel_for("billing", "normal", "de") == "#support-de"
    assert config.routing.channel_for("billing", "normal", "es") == "#support-billing"
    assert config.routing.channel_for("billing", "urgent", "de") == "#support-leads"
    assert config.routing.channel_for("order_status", "normal", None) == "#support-queue"


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("answer_in: [en, es, fr, de, pt, it]", "answer_in: [en, es, nl]",
         "languages.answer_in: unknown language; known languages are en, es, fr, de, pt, it (got 'nl')"),
        ("answer_in: [en, es, fr, de, pt, it]", "answer_in: [en, es, en]", "languages.answer_in: listed twice (got 'en')"),
        ("answer_in: [en, es, fr, de, pt, it]", "answer_in: []", "languages.answer_in must name at least one language"),
        ('languages: {de: "#support-de", fr: "#support-fr"}', 'languages: {deu: "#support-de"}',
         "routing.languages: unknown language"),
    ],
)
def test_a_mistake_in_languages_names_its_line(tmp_path: Path, replace: str, by: str, message: str) -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    assert replace in text
    path = _write(tmp_path, text.replace(replace, by))
    line = text[: text.index(replace)].count("\n") + 1

    with pytest.raises(OpsConfigError) as raised:
        load_support_config(path)

    assert f"support.yml:{line}: {message}" in str(raised.value)


def test_check_lists_every_response_missing_a_switched_on_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domain = tmp_path / "domain"
    domain.mkdir()
    (domain / "responses.yml").write_text(
        "responses:\n"
        "  utter_hi:\n"
        '    - text: "Hi"\n'
        '    - condition: [{type: slot, name: language, value: es}]\n'
        '      text: "Hola"\n'
        "  utter_bye:\n"
        '    - text: "Bye"\n',
        encoding="utf-8",
    )
    support = _write(tmp_path, SHIPPED.read_text(encoding="utf-8").replace(
        "answer_in: [en, es, fr, de, pt, it]", "answer_in: [en, es, fr]"))

    assert check_main([str(support), "--domain", str(domain)]) == 1

    errors = capsys.readouterr().err.splitlines()
    where = domain / "responses.yml"
    assert errors == [
        f"{where}:2: utter_hi has no 'fr' variation (add one with condition [{{type: slot, name: language, value: fr}}])",
        f"{where}:6: utter_bye has no 'es' variation (add one with condition [{{type: slot, name: language, value: es}}])",
        f"{where}:6: utter_bye has no 'fr' variation (add one with condition [{{type: slot, name: language, value: fr}}])",
        f"3 responses missing a language switched on in {support} (languages.answer_in)",
    ]
