"""Events between replicas: PostgreSQL alone beside Redis Streams (see its module)."""

from __future__ import annotations

import sys

from turnstile_tools.bench.relay_events import main

if __name__ == "__main__":
    sys.exit(main())
