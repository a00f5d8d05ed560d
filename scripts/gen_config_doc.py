"""Rewrites the option table in docs/configuration.md from the declarations on ServerConfig."""

from __future__ import annotations

import sys
from pathlib import Path

from turnstile_server.options import reference_table

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN, END = "<!-- options: begin -->\n", "<!-- options: end -->\n"


def main() -> int:
    """Replaces what stands between the two markers; exits 1 when they are missing."""
    text = REFERENCE.read_text(encoding="utf-8")
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        print(f"{REFERENCE}: the markers {BEGIN.strip()} and {END.strip()} are missing")
        return 1
    REFERENCE.write_text(head + BEGIN + reference_table() + END + tail, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
