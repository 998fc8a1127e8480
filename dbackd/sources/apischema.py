"""The API's request and response bodies: checking them against schemas/api.schema.json, and
the OpenAPI description built from the same file.

Shared values (ids, names, statuses, colours) are the config schema's own definitions, so
the config, the HTTP API and the Python API accept exactly the same things. A body is
checked by code compiled from the schema (fastjsonschema: a few microseconds, for the
hot path); only a body that fails is checked again by jsonschema, to explain what is
wrong in the config's wording. This module checks and describes; it changes nothing.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable

import fastjsonschema

from dbackd.config import schema as config_schema
from dbackd.config.schema import Validator, _explain  # the config's checker and wording, reused
from dbackd.config.source import Source

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from referencing import Registry

API_ID = "https://dbackd.invalid/schemas/api.schema.json"


class InvalidRequest(ValueError):
    """A request body or argument that the API schema rejects; the message says where and why."""


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("dbackd").joinpath("data/api.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _registry() -> "Registry":
    from referencing import Registry, Resource  # only to explain a body that failed

    config = config_schema()
    return Registry().with_resources([
        (config["$id"], Resource.from_contents(config)),
        (API_ID, Resource.from_contents(schema())),
    ])


def _config_document(uri: str) -> dict:
    """fastjsonschema's resolver for the api schema's references into the config schema."""
    config = config_schema()
    if uri.split("#")[0] != config["$id"]:
        raise ValueError(f"unexpected schema reference {uri}")
    return config


@lru_cache(maxsize=None)
def _fast(name: str) -> Callable[[Any], Any]:
    root = {"$id": API_ID, "$ref": f"#/$defs/{name}", "$defs": schema()["$defs"]}
    return fastjsonschema.compile(root, handlers={"https": _config_document}, use_default=False)


@lru_cache(maxsize=None)
def _explainer(name: str) -> "Draft202012Validator":
    return Validator({"$ref": f"{API_ID}#/$defs/{name}"}, registry=_registry())


def explain(name: str, data: Any) -> list[str]:
    """Every problem of `data` against definition `name`, as "path: message"."""
    source = Source(file="<request>", data=data)
    out: list[str] = []
    for error in _explainer(name).iter_errors(data):
        for problem in _explain(source, error):
            message = problem.message.replace(" (quote it in YAML)", "")  # a hint for config files only
            out.append(f"{problem.path}: {message}" if problem.path else message)
    return out


def check(name: str, data: Any) -> None:
    """Raise InvalidRequest unless `data` is valid against definition `name` of the API schema."""
    try:
        _fast(name)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        problems = explain(name, data) or [exc.message.replace("data.", "", 1).replace("data ", "", 1)]
        raise InvalidRequest("; ".join(problems[:5])) from None


# -- OpenAPI ----------------------------------------------------------------------------

def _components() -> dict[str, dict]:
    """The API's definitions plus the config definitions they use, with references
    rewritten to #/components/schemas/NAME (one self-contained document)."""
    config_defs = config_schema()["$defs"]
    api_defs = schema()["$defs"]
    config_prefix = config_schema()["$id"].rsplit("/", 1)[1] + "#/$defs/"  # dback.schema.json#/$defs/
    out: dict[str, dict] = {}
    wanted: list[str] = []

    def rewrite(node: Any, local_is_config: bool) -> Any:
        if isinstance(node, dict):
            node = {k: rewrite(v, local_is_config) for k, v in node.items()}
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref.startswith(config_prefix) or (local_is_config and ref.startswith("#/$defs/")):
                    name = ref.rsplit("/", 1)[1]
                    if name in api_defs:
                        raise ValueError(f"config definition {name} clashes with an API definition")
                    wanted.append(name)
                node["$ref"] = "#/components/schemas/" + ref.rsplit("/", 1)[1]
            return node
        if isinstance(node, list):
            return [rewrite(v, local_is_config) for v in node]
        return node

    for name, node in api_defs.items():
        out[name] = rewrite(node, False)
    while wanted:
        name = wanted.pop()
        if name not in out:
            out[name] = rewrite(copy.deepcopy(config_defs[name]), True)
    return out


def _body(name: str) -> dict:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _error(text: str) -> dict:
    return {"description": text, **_body("error")}


_SERVER = {"name": "server", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "The server's short id, its snowflake, or \"default\"."}
_UID = {"name": "uid", "in": "path", "required": True, "schema": {"$ref": "#/components/schemas/snowflake"},
        "description": "The user's Discord id."}
_COMMON = {
    "401": _error("No bearer token, or a malformed Authorization header."),
    "403": _error("A bearer token that is not one of api.tokens."),
    "404": _error("The API is off (api.tokens is empty), or no such server or user."),
    "429": {**_error("Over the token's rate limit; Retry-After says when to try again."),
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}},
}
_WITH_BODY = {
    "400": _error("A body that is not JSON or not valid against the schema."),
    "413": _error("A body larger than api.max_body_bytes."),
    "415": _error("A Content-Type other than application/json."),
}


@lru_cache(maxsize=4)
def openapi(version: str) -> dict:
    """The OpenAPI 3.1 description of the HTTP API, built from the schemas."""

    def op(summary: str, ok: tuple[str, str, str | None], body: str | None = None, extra: dict | None = None) -> dict:
        code, text, schema_name = ok
        responses: dict[str, Any] = {code: {"description": text, **(_body(schema_name) if schema_name else {})}}
        responses.update(_COMMON)
        if body:
            responses.update(_WITH_BODY)
        responses.update(extra or {})
        out: dict[str, Any] = {"summary": summary, "responses": dict(sorted(responses.items()))}
        if body:
            out["requestBody"] = {"required": True, **_body(body)}
        return out

    conflict = {"409": _error("The user is declared by the config (or a data provider): only the declaration removes it.")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "dbackd HTTP API", "version": version,
                 "description": "Drive the d-zone world from scripts and bots: move statuses, send messages, "
                                "add runtime users. Every change goes through the world, so clients that join "
                                "later see it too."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"bearer": []}],
        "paths": {
            "/api/version": {"get": {"summary": "The daemon's version (public)", "security": [],
                                     "responses": {"200": {"description": "The version.", "content": {
                                         "application/json": {"schema": {"type": "object", "properties": {
                                             "version": {"type": "string"}}}}}}}}},
            "/api/openapi.json": {"get": {"summary": "This description (public while the API is on)", "security": [],
                                          "responses": {"200": {"description": "OpenAPI 3.1.",
                                                                "content": {"application/json": {}}}}}},
            "/api/servers": {"get": op("List the servers", ("200", "The servers.", "serverList"))},
            "/api/servers/{server}/users": {
                "parameters": [_SERVER],
                "get": op("List a server's users", ("200", "The users.", "userList")),
            },
            "/api/servers/{server}/presence": {
                "parameters": [_SERVER],
                "post": op("Change presences (one, or a batch in order)", ("200", "Applied and sent.", "applied"),
                           "presenceRequest", conflict),
            },
            "/api/servers/{server}/messages": {
                "parameters": [_SERVER],
                "post": op("Send a message as a user", ("200", "Sent.", "applied"), "message"),
            },
            "/api/servers/{server}/users/{uid}": {
                "parameters": [_SERVER, _UID],
                "put": op("Create or update a runtime user", ("200", "Updated (201: created).", "user"), "userUpdate",
                          {"201": {"description": "Created.", **_body("user")}}),
                "delete": op("Remove a runtime user", ("204", "Removed.", None), None, conflict),
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "One of the config's api.tokens."}},
            "schemas": _components(),
        },
    }
