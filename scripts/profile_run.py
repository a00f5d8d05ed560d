"""Where the CPU of a run goes: `python scripts/profile_run.py [--pin]` profiles B2's server
(`--workload B10`: B10's serial LangGraph runs).

Needs py-spy (`pip install py-spy`); `--help` lists the options.
"""

from __future__ import annotations

import sys

from turnstile_tools.bench.profile import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="scripts/profile_run.py"))
