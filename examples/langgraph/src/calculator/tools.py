"""The calculator's one tool."""

from __future__ import annotations

import os

from langchain_core.tools import tool


@tool
def divide(dividend: float, divisor: float) -> str:
    """Divide one number by another."""
    if divisor == 0:
        return "cannot divide by zero"
    return str(round(dividend / divisor, int(os.environ.get("CALCULATOR_DIGITS", "4"))))
