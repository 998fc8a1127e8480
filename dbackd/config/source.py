"""YAML text → plain data, remembering where every value stood.

Parses with PyYAML's safe composer only (no tags beyond the safe set), rejects
aliases and duplicate keys, interpolates ${VAR} / ${VAR:-default} from the environment, and keeps
a map from each JSON path to its (line, column) so later stages can point at the
file. It does not validate meaning: that is the schema's and the loader's job.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dbackd.config.errors import Problem, format_path

Path = tuple  # tuple[str | int, ...]

# Keys whose values are secrets: never quoted in a message.
_SECRET_KEY = re.compile(r"password|secret|token", re.IGNORECASE)

# ${NAME} or ${NAME:-default}; $${ is a literal "${".
_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Source:
    """Parsed document plus the positions of its nodes."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    from_env: set[Path] = field(default_factory=set)  # paths whose value came from ${VAR}
    included: set = field(default_factory=set)  # other files the config read (corpus files): pathlib.Path
    env_defaulted: set[Path] = field(default_factory=set)  # ...of which a ${VAR:-default} used its default

    def position(self, path: Path, key: bool = False) -> tuple[int, int]:
        """Best (line, column) for a path: the node itself, else its nearest ancestor."""
        table = self.key_marks if key else self.marks
        p = tuple(path)
        while True:
            if p in table:
                return table[p]
            if p in self.marks:
                return self.marks[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def problem(self, path: Path, message: str, key: bool = False) -> Problem:
        """A problem at `path`; a secret on the way (a mock token as a key, a password's
        value) is named by its position and never quoted, in the path or the message."""
        line, col = self.position(path, key)
        shown, secrets = self._masked(tuple(path))
        for secret in filter(None, secrets):
            message = message.replace(repr(secret), "the secret").replace(secret, "the secret")
        return Problem(self.file, line, col, format_path(shown), message)

    def _masked(self, path: Path) -> tuple[Path, list[str]]:
        shown: list = []
        secrets: list[str] = []
        node: Any = self.data
        for i, part in enumerate(path):
            if isinstance(part, str) and i >= 2 and path[i - 2:i] == ("oauth", "tokens"):
                position = list(node).index(part) + 1 if isinstance(node, dict) and part in node else "?"
                shown.append(f"<token #{position}>")
                secrets.append(part)
            else:
                shown.append(part)
            node = node.get(part) if isinstance(node, dict) else (
                node[part] if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node) else None)
        last = path[-1] if path else None
        if isinstance(last, str) and _SECRET_KEY.search(last) and isinstance(node, str) and node:
            secrets.append(node)
        return tuple(shown), secrets


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases: `*name` repeats a node, and a few nested ones
    make a small file expand to billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not supported: "
                                              "write the value out", event.start_mark)
        return super().compose_node(parent, index)


class _Builder:
    def __init__(self, source: Source, env: Mapping[str, str], problems: list[Problem]):
        self.src = source
        self.env = env
        self.problems = problems
        self.constructor = yaml.SafeLoader("")  # only used to construct safe scalars
        self.resolver = yaml.resolver.Resolver()

    def build(self, node: Node, path: Path) -> Any:
        self.src.marks[path] = _mark(node)
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.problems.append(self.src.problem(path, "YAML merge keys (<<) are not supported"))
                    continue
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    key = str(key)
                child = path + (key,)
                if key in out:
                    line, col = _mark(key_node)
                    self.problems.append(
                        Problem(self.src.file, line, col, format_path(child), "duplicate key")
                    )
                    continue
                self.src.key_marks[child] = _mark(key_node)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            value = self._interpolate(node, value, path)
        return value

    def _interpolate(self, node: ScalarNode, text: str, path: Path) -> Any:
        missing: list[str] = []
        used = defaulted = False

        def sub(m: re.Match) -> str:
            nonlocal used, defaulted
            if m.group(0) == "$${":
                return "${"
            used = True
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                defaulted = True
                return default
            missing.append(name)
            return ""

        result = _ENV_RE.sub(sub, text)
        for name in missing:
            self.problems.append(
                self.src.problem(path, f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
            )
        if not used:
            return result
        self.src.from_env.add(path)
        if defaulted:
            self.src.env_defaulted.add(path)
        if node.style is None:
            # A plain scalar such as `port: ${PORT}` takes the YAML type of its value.
            tag = self.resolver.resolve(ScalarNode, result, (True, False))
            return self.constructor.construct_object(ScalarNode(tag, result), deep=True)
        return result


def parse(text: str, file: str, env: Mapping[str, str]) -> tuple[Source, list[Problem]]:
    """Parse YAML text; returns the source and any problems (syntax, duplicates, env)."""
    source = Source(file=file, data=None)
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(s for s in (exc.context, exc.problem) if s) or "invalid YAML"
        problems.append(Problem(file, line, col, "", f"invalid YAML: {what}"))
        return source, problems
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 1, 1, "", f"invalid YAML: {exc}"))
        return source, problems
    if node is None:
        problems.append(Problem(file, 1, 1, "", "the file is empty"))
        return source, problems
    try:
        source.data = _Builder(source, env, problems).build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        problems.append(Problem(file, mark.line + 1 if mark else 1, mark.column + 1 if mark else 1, "", f"invalid YAML: {exc.problem}"))
    return source, problems
