"""Running LangGraph graphs on Turnstile: their checkpointer on our store."""
