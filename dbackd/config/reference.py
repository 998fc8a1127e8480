"""A Markdown reference of every config key, generated from the JSON Schema.

The config reference in docs/configuration.md is this text, so the docs cannot drift from
the schema (a test compares them). Formatting only; it does not validate anything.
"""
from __future__ import annotations

import json

from dbackd.config.schema import schema


def _deref(node: dict, root: dict) -> dict:
    while "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict, root: dict) -> str:
    node = _deref(node, root)
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "anyOf" in node:
        return " or ".join(_type(n, root) for n in node["anyOf"])
    t = node.get("type", "")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array":
        return f"list of {_type(node.get('items', {}), root)}"
    if t == "object" and "propertyNames" in node and isinstance(node.get("additionalProperties"), dict):
        return "mapping"
    if t == "string" and node.get("pattern"):
        return "string"
    return t or "any"


def reference() -> str:
    root = schema()
    lines: list[str] = []

    expanded: set[str] = set()  # $refs whose keys are listed already

    def walk(node: dict, path: str, required: set[str]) -> None:
        node = _deref(node, root)
        props = node.get("properties")
        if not props:
            items = node.get("items")
            if node.get("type") == "array" and isinstance(items, dict) and "properties" in _deref(items, root):
                walk(items, path + "[]", set())
            values = node.get("additionalProperties")
            if isinstance(values, dict) and "properties" in _deref(values, root):
                walk(values, f"{path}.<{node.get('x-key', 'key')}>", set())
            return
        for name, sub in props.items():
            full = f"{path}.{name}" if path else name
            resolved = _deref(sub, root)
            default = ""
            if resolved.get("default") not in (None, {}):
                default = f" Default: `{json.dumps(resolved['default'])}`."
            req = " **Required.**" if name in required else ""
            desc = resolved.get("description", "")
            lines.append(f"| `{full}` | {_type(sub, root)} | {desc}{req}{default} |")
            ref = sub.get("$ref")
            if ref and "properties" in resolved:
                if ref in expanded:
                    continue  # listed once, where it first appears
                expanded.add(ref)
            walk(sub, full, set(_deref(sub, root).get("required", [])))

    lines.append("| key | type | meaning |")
    lines.append("|---|---|---|")
    walk(root, "", set(root.get("required", [])))
    return "\n".join(lines) + "\n"


