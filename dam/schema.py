"""One validation layer for every configuration the user writes (case ``params.json``, ``site.yaml``, experiment
and grid-run YAML): pydantic models that reject unknown keys (suggesting the nearest valid name), check types and
ranges, and turn every failure into one :class:`ConfigError` naming the file and the key.

Define a configuration as a subclass of :class:`Strict` with typed, constrained fields, e.g.::

    class Training(Strict):
        epochs: int = Field(40, ge=1, description="passes over the training windows")
        learning_rate: float = Field(3e-3, gt=0, description="Adam step size")

    cfg = validate(Training, yaml.safe_load(text), where="quick.yaml: network")

The ``description`` of each field is what :func:`reference_table` prints in the configuration reference pages.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

__all__ = ["ConfigError", "Strict", "read_text", "reference_table", "validate"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration is invalid; the message names the file, the key and what is allowed."""


def _numbers(annotation: Any) -> tuple[bool, bool]:
    """Whether a field holds a number, and whether it holds a list or tuple of numbers (without booleans)."""
    union = get_origin(annotation) in (Union, types.UnionType)
    options = get_args(annotation) if union else (annotation,)
    scalar = any(o in (int, float) for o in options) and bool not in options
    inner = [a for o in options if get_origin(o) in (list, tuple) for a in get_args(o) if a is not Ellipsis]
    return scalar, any(a in (int, float) for a in inner) and bool not in inner


class Strict(BaseModel):
    """Base of every configuration model: unknown keys are errors, instances are immutable, values are
    validated again on assignment-free copies (``model_copy(update=...)`` goes through :func:`validate`)."""

    # allow_inf_nan=False: ``.inf`` or ``.nan`` in a file is never a setting (``learning_rate: .inf`` diverges).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for a number; in a YAML file that is a slip (latitude: yes), never a number.
        if info.field_name is None:
            return value
        allowed = _numbers(cls.model_fields[info.field_name].annotation)
        items = value if isinstance(value, list | tuple) and allowed[1] else [value] if allowed[0] else []
        if any(isinstance(v, bool) for v in items):
            raise ValueError("expected a number, got a boolean")
        return value


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The (sub)model that holds the key at ``loc`` (for suggestions), or None where it cannot be resolved."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        current = next(
            (a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type)
             and issubclass(a, BaseModel)),
            None,
        )  # fmt: skip
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def read_text(path: str | os.PathLike, where: str | None = None) -> str:
    """The text of a configuration file the user wrote.

    Raises
    ------
    ConfigError
        When the file is not UTF-8 text, naming the file (``where``, default the path) and the first bad byte.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        byte = err.object[err.start]
        raise ConfigError(
            f"{where or path}: not UTF-8 text (byte 0x{byte:02x} at position {err.start}); save it as UTF-8"
        ) from None


def _describe(error: dict, model: type[BaseModel]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        owner = _model_at(model, loc)
        allowed = sorted(owner.model_fields) if owner is not None else []
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        if not near:  # "opt_frz" for "OPT_FRZ"
            lower = {a.lower(): a for a in allowed}
            near = [lower[m] for m in difflib.get_close_matches(str(loc[-1]).lower(), list(lower), n=1, cutoff=0.6)]
        hint = f"; did you mean {near[0]!r}?" if near else ""
        listing = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {key!r}{hint}{listing}"
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    value = error.get("input")
    shown = "" if isinstance(value, Mapping) else f" (got {value!r})"
    return f"{key}: {error['msg']}{shown}"


def validate(model: type[M], data: Any, where: str) -> M:
    """``model`` validated from ``data`` (a mapping, e.g. parsed YAML; None means empty).

    Raises
    ------
    ConfigError
        One message for all problems, each naming its key: ``"{where}: unknown key 'opt_frzz'; did you mean
        'opt_frz'? ..."``.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems = [_describe(e, model) for e in exc.errors()]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def reference_table(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows ``(key, type, default, description)`` of ``model`` and its nested models, for reference pages."""
    rows = []
    for name, field in model.model_fields.items():
        if field.exclude:  # set by the program, not a key of the file
            continue
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if nested is not None:
            rows += reference_table(nested, prefix=f"{key}.")
            continue
        type_name = _type_name(annotation)
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append((key, type_name, default, field.description or ""))
    return rows
