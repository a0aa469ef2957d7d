"""Round trips through the real readers: bash, dash, zsh, fish, python-dotenv, JSON.

Each shell runs as a subprocess that evaluates the formatter's output, then
prints every variable with printf '%s\\0' and the exported environment with
`env -0`; both are compared byte for byte with the values. A sentinel file
proves that no command substitution ran.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envcat.cli.formats import FormatError, render

POSIX_SHELLS = {
    "bash": ["bash", "--norc", "--noprofile", "-c"],
    "dash": ["dash", "-c"],
    "zsh": ["zsh", "-f", "-c"],
}
FISH = ["fish", "--no-config", "-c"]
DOTENV_EXPANSION = "${"


def need(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here (apt-get install {shell}; CI installs it)")


def tricky_values(sentinel: Path) -> dict[str, str]:
    """Values that broke other CLIs' shell output, each aimed at `sentinel`."""
    return {
        "SINGLE": "it's a 'quoted' word",
        "DOUBLE": 'say "hi" and "bye"',
        "NEWLINES": "line one\nline two\n\nline four",
        "TRAILING_NEWLINES": "ends\n\n",
        "CARRIAGE": "windows\r\nline\r",
        "TABS": "\tcol1\tcol2\t",
        "HOME_REF": "$HOME and ${HOME} and ~",
        "DEFAULT_REF": "${UNSET:-fallback}",
        "SUBST": f"$(touch {sentinel})",
        "BACKTICKS": f"`touch {sentinel}`",
        "ARITH": "$((6*7)) $[1+1]",
        "PROCESS_SUBST": f"<(touch {sentinel}) >(touch {sentinel})",
        "QUOTE_BREAKOUT": f"'; touch {sentinel}; echo '",
        "FISH_BREAKOUT": f"\\'; touch {sentinel}; echo \\'",
        "BACKSLASHES": "C:\\new\\table\\ and \\\\ and \\",
        "HASH": "value # not a comment",
        "SPACES": "  leading and trailing  ",
        "UNICODE": "héllo wörld — ünïcødé ∑ 中文 עברית",
        "EMOJI": "🐱🔑👩‍💻",
        "CONTROL": "\x1b[31mred\x1b[0m \x07 \x7f",
        "EMPTY": "",
        "GLOB": "* ? [a-z]",
        "HISTORY": "!! !$",
        "BIG": ("0123456789abcdef'\"$`\\\n" * 200)[:4096],
    }


def run_shell(argv: list[str], script: str, output: str, tmp_path: Path) -> bytes:
    """Write `output` to a file, run `script` on it in the shell, return stdout."""
    path = tmp_path / "secrets.out"
    path.write_bytes(output.encode("utf-8"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [*argv, script, "_", str(path)] if argv[0] != "fish" else [*argv, script, str(path)],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stderr == b""
    return done.stdout


def posix_script(names: list[str]) -> str:
    printed = "".join(f"printf '%s\\0' \"${name}\"\n" for name in names)
    return f'eval "$(cat "$1")"\n{printed}env -0\n'


def fish_script(names: list[str]) -> str:
    printed = "".join(f"printf '%s\\0' \"${name}\"\n" for name in names)
    return f"source $argv[1]\n{printed}env -0\n"


def check_output(stdout: bytes, values: dict[str, str]) -> None:
    fields = stdout.split(b"\0")
    printed = fields[: len(values)]
    assert printed == [value.encode("utf-8") for value in values.values()]
    exported = dict(field.split(b"=", 1) for field in fields[len(values) : -1])
    for name, value in values.items():
        assert exported[name.encode()] == value.encode("utf-8"), name


@pytest.mark.parametrize("shell", list(POSIX_SHELLS))
def test_sh_format_round_trips_through_posix_shells(shell: str, tmp_path: Path) -> None:
    need(shell)
    sentinel = tmp_path / "pwned"
    values = tricky_values(sentinel)
    stdout = run_shell(
        POSIX_SHELLS[shell], posix_script(list(values)), render(values, "sh"), tmp_path
    )
    check_output(stdout, values)
    assert not sentinel.exists(), "a value was executed by the shell"


def test_fish_format_round_trips_through_fish(tmp_path: Path) -> None:
    need("fish")
    sentinel = tmp_path / "pwned"
    values = tricky_values(sentinel)
    stdout = run_shell(FISH, fish_script(list(values)), render(values, "fish"), tmp_path)
    check_output(stdout, values)
    assert not sentinel.exists(), "a value was executed by fish"


def test_dotenv_format_round_trips_through_python_dotenv(tmp_path: Path) -> None:
    values = {
        name: value
        for name, value in tricky_values(tmp_path / "pwned").items()
        if DOTENV_EXPANSION not in value
    }
    path = tmp_path / ".env"
    path.write_bytes(render(values, "dotenv").encode("utf-8"))
    assert dotenv_values(path) == values  # defaults: interpolation on, file read as text
    assert dotenv_values(path, interpolate=False) == values


def test_dotenv_refuses_what_python_dotenv_would_expand(tmp_path: Path) -> None:
    for name in ("HOME_REF", "DEFAULT_REF"):
        with pytest.raises(FormatError, match=name):
            render({name: tricky_values(tmp_path)[name]}, "dotenv")


def test_json_format_round_trips(tmp_path: Path) -> None:
    values = tricky_values(tmp_path / "pwned")
    assert json.loads(render(values, "json")) == values


# --- properties -----------------------------------------------------------------

# prefixed so no generated name collides with a shell's special variables (IFS, PATH, …)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).map(lambda n: f"t_{n}")
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)
mappings = st.dictionaries(names, texts, max_size=6)
PROPERTY_SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(values=mappings)
def test_any_mapping_round_trips_through_bash(values: dict[str, str]) -> None:
    need("bash")
    with tempfile.TemporaryDirectory() as directory:
        stdout = run_shell(
            POSIX_SHELLS["bash"], posix_script(list(values)), render(values, "sh"), Path(directory)
        )
    check_output(stdout, values)


@PROPERTY_SETTINGS
@given(values=mappings)
def test_any_mapping_round_trips_through_fish(values: dict[str, str]) -> None:
    need("fish")
    with tempfile.TemporaryDirectory() as directory:
        stdout = run_shell(FISH, fish_script(list(values)), render(values, "fish"), Path(directory))
    check_output(stdout, values)


@PROPERTY_SETTINGS
@given(values=st.dictionaries(names, st.one_of(texts, st.sampled_from(["${A}", "$", "\\"]))))
def test_any_mapping_round_trips_through_python_dotenv_or_is_refused(
    values: dict[str, str],
) -> None:
    try:
        text = render(values, "dotenv")
    except FormatError:
        assert any("${" in value and "}" in value for value in values.values())
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ".env"
        path.write_bytes(text.encode("utf-8"))
        assert dotenv_values(path) == values
    assert dotenv_values(stream=io.StringIO(text)) == values
