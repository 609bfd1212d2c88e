"""`printable` (gatewatch/terminal.py): control characters from log data are shown, never obeyed."""

from __future__ import annotations

import re

from gatewatch.terminal import printable

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
HOSTILE = "\x1b[2J\x1b]0;owned\x07\r\nFAKE LINE\x9b31m\x7f\x00\t"


def raw_controls(text: str) -> list[str]:
    """The control characters in `text`, its line ends aside (for captured output)."""
    return CONTROL.findall(text.replace("\n", ""))


def test_every_c0_c1_and_del_is_escaped_visibly() -> None:
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("\r\nFAKE LINE") == "\\r\\nFAKE LINE"
    assert printable("a\tb\x7f\x9b\x00") == "a\\tb\\x7f\\x9b\\x00"
    every = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
    assert not CONTROL.search(printable(every)) and printable(every).count("\\") == len(every)


def test_other_text_is_kept() -> None:
    text = "GET /v1/orders?q=a\\b — café €5 😀 user=alice@example.com"
    assert printable(text) == text
    assert printable(42) == "42" and printable(None) == "None"
    assert printable(HOSTILE) == "\\x1b[2J\\x1b]0;owned\\x07\\r\\nFAKE LINE\\x9b31m\\x7f\\x00\\t"
