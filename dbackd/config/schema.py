"""The JSON Schema that defines the config: loading it and checking data against it.

Validation fills in the schema's `default` values, so defaults live in the schema and
nowhere else, and turns jsonschema's errors into file-positioned Problems. It knows
nothing about what the values mean. A `pattern` is matched as JSON Schema means it (`$`
ends the string), the same way in every checker here: Python's `re` alone would let `$`
match before a final newline ("1\n" a snowflake).
"""
from __future__ import annotations

import copy
import difflib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterator

import fastjsonschema
from fastjsonschema.draft04 import DOLLAR_FINDER
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from dbackd.config.errors import Problem
from dbackd.config.source import Source


@lru_cache(maxsize=1)
def schema_text() -> str:
    return resources.files("dbackd").joinpath("data/dback.schema.json").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(schema_text())


@lru_cache(maxsize=None)
def pattern(text: str) -> re.Pattern:
    """A schema's pattern compiled with `$` as the end of the string (`\\Z`): the compiled
    checkers' own rule (fastjsonschema's), for jsonschema too."""
    return re.compile(DOLLAR_FINDER.sub(r"\\Z", text))


def _pattern(validator, text, instance, schema):
    if validator.is_type(instance, "string") and not pattern(text).search(instance):
        yield ValidationError(f"{instance!r} does not match {text!r}")


# The one checker class of every schema here: JSON Schema 2020-12, patterns as JSON Schema means them.
Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def _with_defaults(cls):
    """A validator class that also writes `default` values into the instance.

    The documented jsonschema recipe: defaults are set before properties are
    validated, so a default is itself checked against its schema.
    """
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Validator)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    # The schema itself is checked against the metaschema by the tests, not at every start.
    return _DefaultingValidator(schema())


@lru_cache(maxsize=None)
def _part_validator(name: str) -> Draft202012Validator:
    return _DefaultingValidator({"$ref": f"#/$defs/{name}", "$defs": schema()["$defs"]})


def fill_defaults(instance: Any, name: str) -> Any:
    """A copy of `instance` with the defaults of `$defs/<name>` filled in (for merged blocks)."""
    data = copy.deepcopy(instance)
    for _ in _part_validator(name).iter_errors(data):
        pass
    return data


@lru_cache(maxsize=None)
def _fast_part(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile({"$ref": f"#/$defs/{name}", "$defs": schema()["$defs"]}, use_default=True)


def check_part(name: str, instance: dict) -> list[tuple[str, str]]:
    """Check one entry against `$defs/<name>`, filling its defaults in place: [] when valid, else
    every problem as (path, message) in the config's wording.

    Valid entries cost a few microseconds (code compiled from the schema), so thousands of
    them can be checked one by one; only an entry that fails is checked again to explain why.
    """
    try:
        _fast_part(name)(instance)
        return []
    except fastjsonschema.JsonSchemaException:
        pass
    source = Source(file="<entry>", data=instance)
    problems = [p for error in _part_validator(name).iter_errors(instance) for p in _explain(source, error)]
    return [(p.path, p.message) for p in problems] or [("", "is not valid")]


def validate(source: Source) -> list[Problem]:
    """Validate source.data in place (filling defaults); return the problems found."""
    problems = []
    for error in _validator().iter_errors(source.data):
        problems.extend(_explain(source, error))
    return problems


def _explain(source: Source, error: ValidationError) -> Iterator[Problem]:
    path = tuple(error.absolute_path)
    custom = error.schema.get("x-error") if isinstance(error.schema, dict) else None
    if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
        # A bad key of a mapping (a status, a uid, a time of day): point at the key itself.
        yield from _explain_key(source, path + (error.instance,), error, custom)
        return
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed] if isinstance(error.instance, dict) else []
        for key in extras:
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            msg = f"unknown key `{key}`"
            msg += f" (did you mean `{hint[0]}`?)" if hint else f" (allowed: {', '.join(allowed)})"
            yield source.problem(path + (key,), msg, key=True)
        return
    if error.validator == "required":
        yield source.problem(path, f"missing required key {error.message.split(' is a required')[0]}")
        return
    if custom and error.validator in ("pattern", "anyOf", "oneOf", "type", "format"):
        yield source.problem(path, custom)
        return
    if error.validator == "enum":
        choices = ", ".join(json.dumps(c) for c in error.validator_value)
        yield source.problem(path, f"{json.dumps(error.instance, default=str)} is not one of {choices}")
        return
    if error.validator == "type":
        yield source.problem(path, f"must be of type {_type_names(error.validator_value)}, not {_kind(error.instance)}")
        return
    yield source.problem(path, error.message)


def _explain_key(source: Source, path: tuple, error: ValidationError, custom: Any) -> Iterator[Problem]:
    if custom:
        yield source.problem(path, custom, key=True)
    elif error.validator == "enum":
        choices = ", ".join(json.dumps(c) for c in error.validator_value)
        yield source.problem(path, f"{json.dumps(error.instance)} is not one of {choices}", key=True)
    else:
        yield source.problem(path, error.message, key=True)


def _type_names(value: Any) -> str:
    names = value if isinstance(value, list) else [value]
    return " or ".join(names)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
