"""What the person sees on stderr: cleaned server text, QR code, spinner."""

from __future__ import annotations

import io
import time

import pytest

from envcat.cli.display import Terminal, format_seconds, qr_text, safe_text

URL = "https://envcat.example/approve/abc123"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[2Jcleared", "\N{REPLACEMENT CHARACTER}[2Jcleared"),
        ("bell\x07", "bell\N{REPLACEMENT CHARACTER}"),
        ("evil\u202egnp.exe", "evil\N{REPLACEMENT CHARACTER}gnp.exe"),
        ("two\nlines\r", "two\N{REPLACEMENT CHARACTER}lines\N{REPLACEMENT CHARACTER}"),
        ("ünïcødé 🐱", "ünïcødé 🐱"),
    ],
)
def test_safe_text_neutralises_terminal_controls(raw: str, shown: str) -> None:
    assert safe_text(raw) == shown


def test_safe_text_cuts_long_text() -> None:
    assert safe_text("x" * 500, limit=10) == "x" * 9 + "…"
    assert safe_text("x" * 10, limit=10) == "x" * 10


@pytest.mark.parametrize(("seconds", "shown"), [(0, "0:00"), (-3, "0:00"), (299.9, "4:59")])
def test_format_seconds(seconds: float, shown: str) -> None:
    assert format_seconds(seconds) == shown


def test_qr_code_is_drawn_with_half_blocks() -> None:
    lines = qr_text(URL).splitlines()
    assert len(lines) > 10
    assert len({len(line) for line in lines}) == 1  # a square block of equal-width rows
    assert set("".join(lines)) <= {"█", "▀", "▄", "\xa0"}


def test_interactive_terminal_shows_qr_bold_phrase_and_spinner() -> None:
    stream = io.StringIO()
    terminal = Terminal(stream, interactive=True, show_qr=True)
    terminal.show_approval(URL, "WDJB-MJHT")
    terminal.start_waiting(lambda: 125.0)
    terminal.note("connection lost, retrying…")
    expected = "Waiting for approval… 2:05 left — connection lost, retrying…"
    give_up = time.monotonic() + 10
    while expected not in stream.getvalue() and time.monotonic() < give_up:
        time.sleep(0.05)  # the spinner thread redraws every 0.1 s
    terminal.stop_waiting()
    terminal.stop_waiting()  # idempotent
    shown = stream.getvalue()
    assert URL in shown
    assert qr_text(URL) in shown
    assert "\x1b[1mWDJB-MJHT\x1b[0m" in shown
    assert expected in shown
    assert shown.endswith("\r\x1b[2K")  # the spinner line is erased at the end


def test_plain_stderr_gets_no_qr_no_escapes_and_notes_once() -> None:
    stream = io.StringIO()
    terminal = Terminal(stream, interactive=False, show_qr=True)
    terminal.show_approval(URL, "WDJB-MJHT")
    terminal.start_waiting(lambda: 10.0)
    for _ in range(3):
        terminal.note("connection lost, retrying…")
    terminal.note("")
    terminal.stop_waiting()
    shown = stream.getvalue()
    assert "\x1b" not in shown
    assert "█" not in shown
    assert "Verification phrase:  WDJB-MJHT\n" in shown
    assert shown.count("Waiting for approval…\n") == 1
    assert shown.count("connection lost, retrying…") == 1


def test_hostile_url_is_cleaned_before_display() -> None:
    stream = io.StringIO()
    Terminal(stream, interactive=False, show_qr=False).show_approval(
        "https://x/\x1b[8mhidden", "WDJB-MJHT"
    )
    assert "\x1b" not in stream.getvalue()


def test_narrow_terminal_gets_no_qr_and_a_one_line_spinner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    stream = io.StringIO()
    terminal = Terminal(stream, interactive=True, show_qr=True)
    terminal.show_approval(URL, "WDJB-MJHT")
    terminal.start_waiting(lambda: 60.0)
    time.sleep(0.15)
    terminal.stop_waiting()
    shown = stream.getvalue()
    assert "█" not in shown
    frames = [frame for frame in shown.split("\r\x1b[2K") if "Waiting" in frame]
    assert frames and all(len(frame) <= 29 for frame in frames)
