"""Text for a terminal from data we did not write.

Log fields (event ids, user agents, routes, subjects, ...) reach alerts, reasons and error messages. Printed
raw, an ESC sequence in one could clear an analyst's screen or recolour it, and a CR or newline could print
a line that looks like ours. Every human-readable line built from such data goes through `printable`:
C0 control characters, DEL and the C1 controls (U+0080–U+009F, which some terminals obey as ESC
sequences) are shown as escapes — `\\n`, `\\r`, `\\t`, else `\\xNN` — and everything else is kept as it is.
JSON output needs none of this: the encoder escapes control characters itself.
"""

from __future__ import annotations

_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def printable(value: object) -> str:
    """`str(value)` with its control characters shown as escapes (`"\\x1b[2J"` → `"\\\\x1b[2J"`)."""
    return str(value).translate(_ESCAPES)
