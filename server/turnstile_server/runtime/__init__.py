"""Graph runtimes: how a registered graph is recognised and run (see `runtime.interface`)."""
