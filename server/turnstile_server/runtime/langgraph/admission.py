"""What LangGraph would refuse in a run, found at admission: INVALID_ARGUMENT with a reason
instead of a run that fails at its first step.

- The config: `recursion_limit` a whole number of at least 1, `max_concurrency` one of at
  least 1, `tags` a list of strings, `metadata` and `configurable` objects; and a request that
  sets both `configurable` and `context` (LangGraph Platform refuses it: "Prefer setting
  context alone").
- The input (a compiled graph's: a factory's graph is only known per run): a key-by-key check
  against the graph's input schema, with pydantic, of the keys it declares (a key it does not
  declare is ignored, as LangGraph ignores it); a channel with a messages reducer
  (`add_messages`) takes whatever LangGraph coerces into messages, so it is not checked here.
  An input none of whose keys the graph reads is refused too: LangGraph would fail the run with
  `EmptyInputError`.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from turnstile_server.errors import InvalidConfig, InvalidInput

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

_INTEGER_OPTIONS = ("recursion_limit", "max_concurrency")
_OBJECT_OPTIONS = ("metadata", "configurable")


def check_config(config: Mapping[str, Any], context: Mapping[str, Any] | None) -> None:
    """InvalidConfig if LangGraph would refuse the run's own config (or it sets configurable
    beside a context)."""
    for key in _INTEGER_OPTIONS:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON numbers arrive as doubles
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidConfig(f"config.{key} must be a whole number of at least 1, not {value!r}")
    for key in _OBJECT_OPTIONS:
        if key in config and not isinstance(config[key], Mapping):
            raise InvalidConfig(f"config.{key} must be an object")
    tags = config.get("tags")
    if tags is not None and (
        not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
    ):
        raise InvalidConfig("config.tags must be a list of strings")
    if context and config.get("configurable"):
        raise InvalidConfig(
            "a run sets both config.configurable and context: set context alone (LangGraph "
            "reads the runtime context from it)"
        )


def check_input(graph: Pregel[Any], run_input: Mapping[str, Any] | None) -> None:
    """InvalidInput if a compiled graph's input schema refuses the input (see the module)."""
    if not run_input:
        return
    schema = _input_schema(graph)
    if schema is None:
        return
    from pydantic import BaseModel, ValidationError

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            schema.model_validate(dict(run_input))
        except ValidationError as exc:
            raise InvalidInput(
                f"input does not fit the graph's input schema: {_first(exc)}"
            ) from None
        return
    checks = _checks(schema)
    if not checks:
        return
    read = [key for key in run_input if key in checks]
    if not read:
        raise InvalidInput(
            f"input has none of the keys the graph reads ({', '.join(sorted(checks))})"
        )
    for key in read:
        adapter = checks[key]
        if adapter is None:
            continue
        try:
            adapter.validate_python(run_input[key])
        except ValidationError as exc:
            raise InvalidInput(f"input.{key}: {_first(exc)}") from None
        except Exception:
            continue  # a type pydantic cannot check: LangGraph decides at run time


@functools.lru_cache(maxsize=256)
def _checks(schema: Any) -> dict[str, Any]:
    """A TypedDict-like schema's keys, each with the pydantic `TypeAdapter` that checks its
    value (None: not checked here); built once per schema, not per run (building the adapters
    cost a run more than validating with them). Empty when the schema has no type hints."""
    from pydantic import TypeAdapter

    try:
        hints = typing.get_type_hints(schema, include_extras=True)
    except Exception:
        return {}
    checks: dict[str, Any] = {}
    for key, annotation in hints.items():
        checks[key] = None
        if _reduces_messages(annotation):
            continue
        try:
            checks[key] = TypeAdapter(_unannotated(annotation))
        except Exception:
            continue  # a type pydantic cannot check: LangGraph decides at run time
    return checks


def _input_schema(graph: Pregel[Any]) -> Any:
    builder = getattr(graph, "builder", None)
    return getattr(builder, "input_schema", None) if builder is not None else None


def _reduces_messages(annotation: Any) -> bool:
    for extra in getattr(annotation, "__metadata__", ()):
        if callable(extra) and "messages" in getattr(extra, "__name__", ""):
            return True
    return False


def _unannotated(annotation: Any) -> Any:
    return annotation.__origin__ if hasattr(annotation, "__metadata__") else annotation


def _first(exc: Any) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    error = errors[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))
