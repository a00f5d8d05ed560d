"""Long threads on LangGraph savers: Turnstile's beside AsyncSqliteSaver (see its module)."""

from __future__ import annotations

import sys

from turnstile_tools.bench.saver import main

if __name__ == "__main__":
    sys.exit(main())
