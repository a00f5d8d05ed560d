"""A small LangGraph project: a calculator that answers through a tool."""
