"""Measures Turnstile against a raw gRPC echo server: `python scripts/bench.py [--quick]`.

A thin wrapper over `turnstile bench` (`turnstile_tools.bench`); `--help` lists the options.
"""

from __future__ import annotations

import sys

from turnstile_tools.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="scripts/bench.py"))
