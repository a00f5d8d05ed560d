"""Built-in graphs: `agent` (offline weather agent) and `echo` (benchmarks)."""
