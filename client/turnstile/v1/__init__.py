"""Generated code for turnstile.v1; do not edit."""
