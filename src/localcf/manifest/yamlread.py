"""The manifest as YAML with lines: parse, substitute ((vars)), and note where every field is.

The YAML is read with PyYAML's compose API, so every field keeps the line it was written on. The
walk turns the node tree into plain Python values (what `yaml.safe_load` would give), replacing
``((name))`` from ``--var name=value`` and ``--vars-file FILE`` on the way (``--var`` wins, a later
file wins over an earlier one; an unresolved name is an error), and fills a `Findings`: the line
and the written name of every field path, the text of every scalar as written, and the problems
and warnings found so far. Validation (`validation`) goes on filling the same `Findings`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from ..jsondoc import JsonObject
from .model import ManifestError, canon, field_name, nearest_line, scalar_text, show_value

UNRESOLVED_VARS = "Expected to find variables: {names}"

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_VAR_RE = re.compile(r"\(\(([-/.\w]+)\)\)")


def parse_var_flags(flags: Iterable[str]) -> dict[str, str]:
    """`["k=v", ...]` from `--var k=v` flags into a dict."""
    out: dict[str, str] = {}
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not sep or not name.strip():
            raise ManifestError(f"'{flag}' is not NAME=VALUE", field="--var",
                                hint="write it as --var NAME=VALUE, e.g. --var port=8082")
        out[name.strip()] = value
    return out


def collect_vars(vars: Mapping[str, Any] | None, vars_files: Sequence[Path | str]) -> JsonObject:
    merged: JsonObject = {}
    for vars_file in vars_files:
        vars_file = Path(vars_file)
        try:
            text = vars_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"cannot read the vars file ({exc.strerror})", str(vars_file),
                                field="--vars-file", hint="give the path of a YAML file of NAME: VALUE lines") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, str(vars_file)) from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ManifestError(f"a vars file must be a YAML map of names to values, not {show_value(data)}",
                                str(vars_file), 1, hint="write one NAME: VALUE per line")
        merged.update({str(k): v for k, v in data.items()})
    merged.update(vars or {})
    return merged


def _compose(text: str, source: str) -> Node | None:
    try:
        # cf reads the first YAML document of the file; so do we.
        return next(iter(yaml.compose_all(text, Loader=yaml.SafeLoader)), None)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None


def _yaml_error(exc: yaml.YAMLError, source: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    hint = ("indent with spaces, YAML does not allow tabs" if "\\t" in problem or "\t" in problem
            else "check the indentation and the quoting on this line and the one before")
    if mark is None:
        return ManifestError(message, source, hint=hint)
    return ManifestError(message, source, mark.line + 1, column=mark.column + 1, hint=hint)

class Findings:
    """What reading a manifest found: where each field is, and what is wrong with it."""

    def __init__(self, source: str):
        self.source = source
        self.lines: dict[tuple, int] = {(): 1}
        """Line (1-based) of every canonical field path."""
        self.fields: dict[tuple, str] = {}
        """The field name as written (dashes kept) of every canonical path."""
        self.texts: dict[tuple, str] = {}
        """The text of every scalar as written (numbers keep their form: `1.10` stays `1.10`)."""
        self.problems: list[ManifestError] = []
        self.warnings: list[str] = []

    def fail(self, path: tuple, message: str, hint: str | None = None) -> None:
        key = canon(path)
        self.problems.append(ManifestError(message, self.source, nearest_line(self.lines, key),
                                           self.fields.get(key) or field_name(path) or None, hint=hint))

    def warn(self, path: tuple, message: str) -> None:
        key = canon(path)
        where = f"{self.source}:{nearest_line(self.lines, key)}"
        self.warnings.append(f"{where}: {self.fields.get(key) or field_name(path)}: {message}")

    def raise_problems(self) -> None:
        """Raise the first problem (by line), the others in its `more`; nothing if none."""
        if self.problems:
            first, *rest = sorted(self.problems, key=lambda p: p.line or 0)
            first.more = rest
            raise first


def read_yaml(text: str, source: str, vars: Mapping[str, Any]) -> tuple[Any, Findings]:
    """The manifest's values with ((vars)) substituted, and the findings; raises ManifestError
    (all problems at once) when the YAML or a var is wrong."""
    found = Findings(source)
    root = _compose(text, source)
    walker = _Walker(found, vars)
    data = walker.value(root, ()) if root is not None else None
    if walker.missing:
        names = list(dict.fromkeys(name for name, _ in walker.missing))
        found.fail(walker.missing[0][1], UNRESOLVED_VARS.format(names=", ".join(names)),
                   "give each with --var NAME=VALUE or in a --vars-file")
    found.raise_problems()
    return data, found


class _Walker:
    """Walks the node tree once, substituting vars and noting lines."""

    def __init__(self, found: Findings, vars: Mapping[str, Any]):
        self.found = found
        self.lines, self.fields, self.texts = found.lines, found.fields, found.texts
        self.fail = found.fail
        self.vars = vars
        self.missing: list[tuple[str, tuple]] = []
        self.constructor = SafeConstructor()
        self.resolver = Resolver()

    def value(self, node: Node, path: tuple) -> Any:
        key = canon(path)
        self.lines.setdefault(key, node.start_mark.line + 1)
        self.fields.setdefault(key, field_name(path))
        if isinstance(node, ScalarNode):
            node = self.substitute(node, path)
        if isinstance(node, ScalarNode):
            self.texts[key] = node.value
            try:
                return self.constructor.construct_object(node, deep=True)
            except ConstructorError as exc:
                self.fail(path, f"cannot read this value: {exc.problem}", "remove the tag or quote the value")
                return None
        if isinstance(node, SequenceNode):
            return [self.value(item, path + (index,)) for index, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)  # compose makes scalars, sequences and mappings only
        return self.mapping(node, path)

    def mapping(self, node: MappingNode, path: tuple) -> dict:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key is not None and key in seen:
                self.lines.setdefault(canon(path + (key,)), key_node.start_mark.line + 1)
                self.fail(path + (key,), f"'{key}' is given twice (first on line {seen[key]})", "keep only one of them")
            elif key is not None:
                seen[key] = key_node.start_mark.line + 1
        try:
            self.constructor.flatten_mapping(node)  # merge keys (<<: *anchor), as YAML 1.1 defines
        except ConstructorError as exc:
            self.fail(path, f"cannot merge: {exc.problem}", "merge (<<) only maps")
        out: JsonObject = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.lines.setdefault(canon(path), key_node.start_mark.line + 1)
                self.fail(path, "a key must be a plain name, not a list or a map", "write the key as a word")
                continue
            key_node = self.substitute(key_node, path)
            key = key_node.value  # as written: `yes:` stays "yes", `8080:` stays "8080"
            child = path + (key,)
            self.lines.setdefault(canon(child), key_node.start_mark.line + 1)
            self.fields.setdefault(canon(child), field_name(child))
            out[key] = self.value(value_node, child)
        return out

    # -- ((vars))

    def lookup(self, name: str) -> tuple[bool, Any]:
        if name in self.vars:
            return True, self.vars[name]
        value: Any = self.vars
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return False, None
            value = value[part]
        return True, value

    def substitute(self, node: ScalarNode, path: tuple) -> Node:
        if "((" not in node.value:
            return node
        whole = _VAR_RE.fullmatch(node.value.strip())
        if whole:
            found, value = self.lookup(whole.group(1))
            if not found:
                self.missing.append((whole.group(1), path))
                return node
            return self.node_for(value, node)

        def one(match: re.Match) -> str:
            found, value = self.lookup(match.group(1))
            if not found:
                self.missing.append((match.group(1), path))
                return match.group(0)
            if isinstance(value, (dict, list)):
                self.fail(path, f"(({match.group(1)})) is {show_value(value)} and cannot be part of a longer string",
                          "use it as the whole value, or give a plain value")
                return match.group(0)
            return scalar_text(value)

        text = _VAR_RE.sub(one, node.value)
        return self.scalar_node(text, node)

    def scalar_node(self, text: str, like: ScalarNode) -> ScalarNode:
        # A quoted value stays a string; a plain one is typed from its new text, as if written so.
        tag = _STR if like.style else self.resolver.resolve(ScalarNode, text, (True, False))
        return ScalarNode(tag, text, like.start_mark, like.end_mark, style=like.style)

    def node_for(self, value: Any, like: ScalarNode) -> Node:
        if isinstance(value, str):
            return self.scalar_node(value, like)
        node = yaml.compose(yaml.safe_dump(value), Loader=yaml.SafeLoader)
        assert node is not None  # safe_dump of a value is never an empty document
        _move_marks(node, like)
        return node

    # -- validation

def _move_marks(node: Node, like: Node) -> None:
    # A var's value was parsed from elsewhere: point all of it at the ((var)) it replaced.
    node.start_mark, node.end_mark = like.start_mark, like.end_mark
    if isinstance(node, SequenceNode):
        for item in node.value:
            _move_marks(item, like)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            _move_marks(key, like)
            _move_marks(value, like)
