"""Everything the CLI shows the person, on stderr: URL, phrase, QR code, spinner.

stdout is reserved for the secrets output, so `eval "$(envcat get)"` works.
The QR code and the spinner appear only when stderr is a terminal.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import unicodedata
from collections.abc import Callable
from typing import TextIO

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_CLEAR_LINE = "\r\x1b[2K"
_BOLD = "\x1b[1m{}\x1b[0m"


def safe_text(text: str, limit: int = 300) -> str:
    """Return server-supplied text without control or bidi characters, cut to `limit`.

    A hostile server must not be able to move the cursor, recolour or reorder
    what the person reads next to the verification phrase.
    """
    cleaned = "".join(
        "\N{REPLACEMENT CHARACTER}" if unicodedata.category(char) in _UNSAFE_CATEGORIES else char
        for char in text[: limit + 1]
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def qr_text(data: str) -> str:
    """Return `data` as a terminal QR code drawn with half-block characters."""
    import qrcode  # lazy: keeps `envcat --version` fast

    code = qrcode.QRCode(border=1, error_correction=qrcode.constants.ERROR_CORRECT_L)
    code.add_data(data)
    code.make(fit=True)
    buffer = io.StringIO()
    code.print_ascii(out=buffer, invert=True)
    return buffer.getvalue()


def terminal_columns(stream: TextIO) -> int:
    """Return the width of the terminal behind `stream` (stdout may be a pipe).

    Falls back to $COLUMNS, then 80, when the stream is no terminal or reports 0.
    """
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns if columns > 0 else shutil.get_terminal_size().columns


def format_seconds(seconds: float) -> str:
    """Return a duration as `m:ss` (never negative)."""
    whole = max(0, int(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


class _Spinner:
    """A background thread redrawing one status line while the main thread waits."""

    def __init__(self, stream: TextIO, seconds_left: Callable[[], float]) -> None:
        self._stream = stream
        self._seconds_left = seconds_left
        self._width = max(terminal_columns(stream) - 1, 20)  # one line, or \r cannot erase it
        self._note = ""
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="envcat-spinner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_note(self, note: str) -> None:
        self._note = note

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._write(_CLEAR_LINE)

    def _run(self) -> None:
        frame = 0
        while True:
            note = f" — {self._note}" if self._note else ""
            left = format_seconds(self._seconds_left())
            status = (
                f"{_FRAMES[frame % len(_FRAMES)]} Waiting for approval… "
                f"{left} left{note} (Ctrl-C to cancel)"
            )
            self._write(_CLEAR_LINE + status[: self._width])
            frame += 1
            if self._stopped.wait(0.1):
                return

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()


class Terminal:
    """Writes the person-facing side of a run to stderr."""

    def __init__(self, stream: TextIO, *, interactive: bool, show_qr: bool) -> None:
        self._stream = stream
        self._interactive = interactive
        self._show_qr = show_qr and interactive
        self._spinner: _Spinner | None = None
        self._last_note = ""

    def line(self, text: str = "") -> None:
        """Write one line for the person."""
        self._stream.write(text + "\n")
        self._stream.flush()

    def show_approval(self, url: str, phrase: str) -> None:
        """Show where to approve, the QR code (terminals only) and the phrase to compare."""
        shown_phrase = _BOLD.format(phrase) if self._interactive else phrase
        self.line("Approve this request in a browser:")
        self.line()
        self.line(f"    {safe_text(url, limit=2000)}")
        self.line()
        if self._show_qr:
            code = qr_text(url)
            if len(code.partition("\n")[0]) < terminal_columns(self._stream):
                self._stream.write(code)
                self.line()
        self.line(f"Verification phrase:  {shown_phrase}")
        # A workspace may hide the phrase on the page and have the approver type it.
        self.line("Approve only if the page shows this same phrase, or type it where it asks.")
        self.line()

    def start_waiting(self, seconds_left: Callable[[], float]) -> None:
        """Start the spinner with the time left (terminals) or say once that we wait."""
        if self._interactive:
            self._spinner = _Spinner(self._stream, seconds_left)
            self._spinner.start()
        else:
            self.line("Waiting for approval…")

    def note(self, text: str) -> None:
        """Show a passing condition (e.g. retrying): in the spinner, or once as a line."""
        if self._spinner is not None:
            self._spinner.set_note(text)
        elif text and text != self._last_note:
            self.line(text)
        self._last_note = text

    def stop_waiting(self) -> None:
        """Stop and erase the spinner, if any; safe to call more than once."""
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
