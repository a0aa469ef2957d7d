"""Reading `git log -p` for `envcat scan --git-history` (issue #19): the parser's edge cases."""

from __future__ import annotations

from envcat.cli.scan_detect import candidates, mask
from envcat.cli.scan_sources import Chunk, _parse_log

LOG = """\x00commit aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa

diff --git a/app.env b/app.env
new file mode 100644
--- /dev/null
+++ b/app.env
@@ -0,0 +1,2 @@
+A=1
+++ not-a-header-but-an-added-line
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-removed
\x00commit bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb

diff --git a/dir/x y.py b/dir/x y.py
--- a/dir/x y.py
+++ b/dir/x y.py
@@ -10,0 +11,1 @@ def f():
+TOKEN = "later"
diff --git a/img.png b/img.png
Binary files /dev/null and b/img.png differ
"""


def test_added_lines_are_numbered_per_file_and_commit_and_removals_ignored() -> None:
    chunks = list(_parse_log(LOG.split("\n")))
    assert chunks == [
        Chunk("app.env", "a" * 40, [(1, "A=1"), (2, "++ not-a-header-but-an-added-line")]),
        Chunk("dir/x y.py", "b" * 40, [(11, 'TOKEN = "later"')]),
    ]


def test_candidates_are_long_tokens_and_values_after_separators_masked() -> None:
    line = 'url: "postgres://u:pw@db/app" KEY=abcdefghijkl short=abc'
    found = {place.masked for _, place in candidates(Chunk("f", None, [(1, line)]))}
    assert mask("postgres://u:pw@db/app") in found and mask("abcdefghijkl") in found
    assert mask("abc") not in found and all("(" in m for m in found)
