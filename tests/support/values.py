"""Hostile values every output path must carry intact."""

from __future__ import annotations

NASTY = {
    "DOUBLE": 'say "hi"',
    "SINGLE": "it's",
    "BOTH": """'"'""",
    "NEWLINES": "line1\nline2\n\nline4\n",
    "CRLF": "a\r\nb\rc",
    "TABS": "\tcol1\tcol2\t",
    "DOLLAR": "$HOME and $USER",
    "BRACED": "${X} ${HOME:-fallback} ${}",
    "BACKSLASHES": "C:\\new\\table \\n \\\\ \\\" \\' \\",
    "TRAILING_BACKSLASH": "ends with \\",
    "HASH": "# not a comment #",
    "SPACES": "  padded both sides  ",
    "UNICODE": "ünïcödé 中文 🔑🐈‍⬛",
    "EMPTY": "",
    "EQUALS": "a=b=c",
    "EXPORT_LOOKALIKE": "export X=1",
    "CONTROL": "\x01\x07\x0b\x0c\x1b[31m\x7f",
    "SEPARATORS": "\x85\u2028\u2029\x1c\x1d\x1e",
    "BOM": "\ufeffstarts with a BOM",
    "PEM": "-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n",
    "BIG": ("0123456789abcdef" * 256),
    "QUOTE_NEWLINE_MIX": '\\"\n\\n"\\',
}
