"""Turnstile server: runs agent graphs over threads with multitask strategies, over gRPC."""
