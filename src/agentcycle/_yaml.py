"""YAML written by hand (router configs, eval suites): errors that name the line; and
YAML we write for Go's readers (``dump_yaml12``: strings stay strings).

``load_yaml`` parses once, keeps the node tree (each node knows its line) beside the
data, and rejects a key given twice in one mapping (YAML silently keeps the last, so a
typo'd copy would win unseen). ``YamlDoc.line`` maps a location in the data (a pydantic
error's ``loc``) to the 1-based line it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentcycle.errors import AgentcycleError, ConfigError

Loc = tuple[str | int, ...]
_NULL = "tag:yaml.org,2002:null"


@dataclass
class YamlDoc:
    """The parsed data, its node tree and where it came from."""

    data: Any
    root: yaml.Node | None
    source: str

    def locate(self, loc: Loc) -> tuple[int | None, Loc]:
        """(the line ``loc`` points at, the part of ``loc`` found in the file).

        A key the data lacks (pydantic's "Field required") points at its parent's key
        and is named; parts with no node (a policy's options given in code) are dropped.
        """
        node, key, walked = self.root, None, list[str | int]()
        for part in self.clean(loc):
            found = _child(node, part)
            if found is None:
                if isinstance(node, yaml.MappingNode):
                    walked.append(part)
                    node = key or node
                break
            (key, node), walked = found, [*walked, part]
        return (node.start_mark.line + 1 if node is not None else None), tuple(walked)

    def clean(self, loc: Loc) -> Loc:
        """A pydantic error location without the union members' tags it adds ("str",
        "DatasetSpec"): a part the file has is kept, whatever it looks like."""
        node, kept = self.root, list[str | int]()
        for part in loc:
            found = _child(node, part)
            if found is not None:
                node = found[1]
            elif _is_union_tag(part):
                continue
            else:
                node = None
            kept.append(part)
        return tuple(kept)

    def line(self, loc: Loc) -> int | None:
        return self.locate(loc)[0]

    def where(self, loc: Loc) -> str:
        """'file:line' (or just the file when the location has no line)."""
        line = self.line(loc)
        return f"{self.source}:{line}" if line else self.source

    def error(self, loc: Loc, message: str,
              error: type[AgentcycleError] = ConfigError) -> AgentcycleError:
        """`file:line: field.path: message`."""
        line, walked = self.locate(loc)
        field = ".".join(str(p) for p in (walked or loc))
        where = f"{self.source}:{line}" if line else self.source
        return error(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def load_yaml(text: str, source: str, *,
              error: type[AgentcycleError] = ConfigError) -> YamlDoc:
    """Parse ``text``; bad YAML and a key given twice are one ``error`` with the line."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a NUL or control character, found up front
        raise error(f"{source}: invalid YAML: character #x{exc.character:04x} at offset "
                    f"{exc.position} is not allowed in YAML") from None
    try:
        root = loader.get_single_node()
        _reject_duplicate_keys(root, source, error)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise error(f"{source}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return YamlDoc(data, root, source)


def load_yaml_file(path: Path, *, error: type[AgentcycleError] = ConfigError) -> YamlDoc:
    """``load_yaml`` of a file's text; a file that is not UTF-8 is one ``error``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}): is it a YAML file?") from None
    return load_yaml(text, str(path), error=error)


def _reject_duplicate_keys(root: yaml.Node | None, source: str,
                           error: type[AgentcycleError]) -> None:
    stack, seen_nodes = [root], set[int]()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:  # an alias is the same node again
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in keys:
                        raise error(f"{source}:{key.start_mark.line + 1}: key '{key.value}' "
                                    "appears twice in the same mapping")
                    keys.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(the key node or None, the value node) of one step into the YAML tree."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                # A null value has no useful line of its own: point at the key.
                return key, (value if value.tag != _NULL else key)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member's type to the location ("str", "dict[str,any]").
    return isinstance(part, str) and (part in ("str", "int", "float", "list[...]")
                                      or part[:1].isupper()  # a model: "DatasetSpec"
                                      or part.startswith(("dict[", "list[", "function-")))


def relevant_errors(errors: list[dict], doc: YamlDoc) -> list[dict]:
    """pydantic's errors, their locations cleaned, without a union's "should be a valid
    list" noise when another member of the same union went deeper (``dataset: {limit:
    -1}`` is a mapping with a bad limit, not a list that failed)."""
    errors = [{**e, "loc": doc.clean(e["loc"])} for e in errors]
    kept = [e for e in errors
            if not (e["type"].endswith("_type") and any(
                len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"]
                for o in errors))]
    return kept or errors


# --- writing YAML that Go's YAML 1.2 readers (kubectl, kustomize, Argo CD) read back ---

# PyYAML quotes what YAML 1.1 would read as a number; YAML 1.2 also reads "12e4567" (a
# git short SHA) as one, and kustomize then fails on an image tag that is not a string.
_YAML12_NUMBER = re.compile(
    r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


class _Yaml12SafeDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if _YAML12_NUMBER.fullmatch(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Yaml12SafeDumper.add_representer(str, _represent_str)


def dump_yaml12(data: Any, **options: Any) -> str:
    """``yaml.safe_dump`` whose strings stay strings for YAML 1.2 readers too."""
    return yaml.dump(data, Dumper=_Yaml12SafeDumper, **options)
