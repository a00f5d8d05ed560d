"""Tools around the server: the `turnstile` command, the bench, the operator CLI and the demo."""
