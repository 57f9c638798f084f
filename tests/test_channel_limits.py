"""``python -m bot ops check`` names the responses a switched-on channel cannot show as written, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ops import check_main
from bot.ops.channel_limits import LIMITS, switched_on

ROOT = Path(__file__).resolve().parent.parent

DOMAIN = """\
version: "3.1"
responses:
  utter_fits:
    - text: "Which one?"
      buttons:
        - {title: "Yes", payload: "/affirm"}
        - {title: "No", payload: "/deny"}
  utter_sizes:
    - text: "Pick a size"
      buttons:
{sizes}
  utter_long:
    - text: "What happened?"
      buttons:
        - title: "Late"
          payload: "/late"
        - title: "Says delivered, but it isn't here"
          payload: "/not_here"
"""


@pytest.fixture
def domain(tmp_path: Path, english_only: Path) -> Path:
    folder = tmp_path / "domain"
    folder.mkdir()
    sizes = "\n".join(f'        - {{title: "EU {n}", payload: "/size{n}"}}' for n in range(30, 44))
    (folder / "responses.yml").write_text(DOMAIN.replace("{sizes}", sizes), encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def no_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    for limits in LIMITS.values():
        monkeypatch.delenv(limits.switch, raising=False)


@pytest.fixture
def english_only(tmp_path: Path) -> Path:
    """The shipped support.yml answering in English only (the test domains have no other variations)."""
    shipped = (ROOT / "support.yml").read_text(encoding="utf-8")
    assert "answer_in: [en, es, fr, de, pt, it]" in shipped
    path = tmp_path / "support.yml"
    path.write_text(shipped.replace("answer_in: [en, es, fr, de, pt, it]", "answer_in: [en]"), encoding="utf-8")
    return path


def check(
    capsys: pytest.CaptureFixture[str], *argv: str, support: Path = ROOT / "support.yml"
) -> tuple[int, str, list[str]]:
    status = check_main([str(support), *argv])
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


def test_each_response_a_channel_cannot_show_is_named_with_file_and_line(
    domain: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, lines = check(capsys, "--channels", "whatsapp,messenger", "--domain", str(domain), support=domain.parent / "support.yml")
    file = domain / "responses.yml"
    assert status == 0  # warnings: make run still starts
    assert lines == [
        f"warning: {file}:10: response utter_sizes on whatsapp: 14 buttons; at most 10 fit in a list message",
        f"warning: {file}:10: response utter_sizes on messenger: 14 buttons; at most 13 fit in quick replies",
        f"warning: {file}:30: response utter_long on whatsapp: button title \"Says delivered, but it isn't here\" is "
        "33 characters; at most 24 fit in a list message",
        f"warning: {file}:30: response utter_long on messenger: button title \"Says delivered, but it isn't here\" is "
        "33 characters; at most 20 fit in quick replies",
    ]
    assert out.splitlines()[-1] == "whatsapp, messenger: 4 finding(s); the channel(s) cannot show as written"


def test_strict_fails_and_an_unknown_channel_is_named(domain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, lines = check(capsys, "--channels", "whatsapp", "--domain", str(domain), "--strict", support=domain.parent / "support.yml")
    assert status == 1 and all(line.startswith("error: ") for line in lines) and len(lines) == 2

    status, _, lines = check(capsys, "--channels", "whatsap", "--domain", str(domain), support=domain.parent / "support.yml")
    assert (status, lines) == (1, ["--channels: unknown channel(s) whatsap; known: messenger, instagram, whatsapp"])


def test_the_channels_switched_on_in_the_environment_are_checked_by_default(
    domain: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, lines = check(capsys, "--domain", str(domain), support=domain.parent / "support.yml")
    assert (status, lines) == (0, []) and "finding" not in out  # nothing switched on, nothing to say

    monkeypatch.setenv("WHATSAPP_ACCESS_TOKEN", "EAAG-token")
    assert switched_on({"WHATSAPP_ACCESS_TOKEN": "x", "INSTAGRAM_TOKEN": " "}) == ["whatsapp"]
    status, out, lines = check(capsys, "--domain", str(domain), support=domain.parent / "support.yml")
    assert status == 0 and len(lines) == 2 and all(" on whatsapp: " in line for line in lines)


def test_the_shipped_domain_fits_whatsapp_but_one_title(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, lines = check(capsys, "--channels", "whatsapp")
    assert status == 0
    named = [line.split(": response ")[1].split(":")[0] for line in lines]
    assert "utter_ask_delivery_problem on whatsapp" in named
    # Every finding is a title too long for a list message (the shipped responses never have over 10 buttons).
    assert lines and all(line.startswith("warning: ") and "at most 24 fit in a list message" in line for line in lines)
