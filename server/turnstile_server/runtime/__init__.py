"""Graph runtimes: how a registered graph is run on a thread."""
