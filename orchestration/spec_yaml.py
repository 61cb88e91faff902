"""YAML text → data and the line of every path, for the spec loader.

libyaml parses (fast), a composer of ours builds the nodes without recursion, and every key's
and value's line is recorded by path so each later error can name its line.

A plain document (no anchors, aliases, explicit tags, merge keys, complex or duplicate keys:
what specs are) is built straight from libyaml's events, data and lines in one pass without
nodes (`_plain_document`); anything else takes the general path, nodes first, which also says
what is wrong.
"""

from collections.abc import Iterable
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

from orchestration.spec_problems import Path_, SpecError

MAX_YAML_NODES = 200_000  # the demo has ~3,000; a spec of 15,000 lines ~50,000
MAX_YAML_DEPTH = 10_000  # collections inside collections; real specs nest fewer than 20


class YamlTooComplex(Exception):
    """The YAML cannot become a spec: a cyclic alias, aliases expanding too far, or nesting
    deeper than the parser's stack (the line is where it was noticed)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


class Lines:
    """Line numbers of every key and value in a YAML document, by path."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int]] = []

    def walk(self, root: yaml.Node, aliases: bool = True) -> None:
        """Record every path's line, without recursion: a YAML alias can make the tree cyclic
        (`a: &x [*x]`) or, nested, expand it exponentially; both are refused (YamlTooComplex)
        instead of looping or exhausting the stack. `aliases=False` (the composer saw none):
        the nodes are a tree, so the ancestors a cycle check needs are not tracked (a quarter
        of a 15,000-line spec's walk)."""
        none: frozenset[int] = frozenset()
        stack: list[tuple[yaml.Node, Path_, frozenset[int]]] = [(root, (), none)]
        visited = 0
        while stack:
            node, path, ancestors = stack.pop()
            visited += 1
            if visited > MAX_YAML_NODES:
                raise YamlTooComplex(node.start_mark.line + 1, f"more than {MAX_YAML_NODES:,} "
                                      "values once aliases (*name) are expanded; write the "
                                      "spec out or split it")
            if aliases and id(node) in ancestors:
                raise YamlTooComplex(node.start_mark.line + 1, "an alias (*name) refers to a "
                                      "value that contains it, so the spec never ends")
            self.lines.setdefault(path, node.start_mark.line + 1)
            if isinstance(node, yaml.ScalarNode):
                continue
            inside = ancestors | {id(node)} if aliases else none
            if isinstance(node, yaml.MappingNode):
                seen: set[str] = set()
                for key_node, value_node in node.value:
                    key = str(key_node.value)
                    child = (*path, key)
                    if key in seen:
                        self.duplicates.append((child, key_node.start_mark.line + 1))
                    seen.add(key)
                    self.lines[child] = key_node.start_mark.line + 1
                    stack.append((value_node, child, inside))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    stack.append((item, (*path, index), inside))

    def line(self, path: Iterable[str | int]) -> int:
        """The line of the deepest part of `path` that exists in the file."""
        found: Path_ = ()
        for part in path:
            candidate = (*found, part)
            if candidate in self.lines:
                found = candidate
        return self.lines.get(found, 1)


_COLLECTIONS: dict[type, type[yaml.SequenceNode] | type[yaml.MappingNode]] = {
    SequenceStartEvent: yaml.SequenceNode, MappingStartEvent: yaml.MappingNode}

if not yaml.__with_libyaml__:  # PyYAML built without libyaml: the pure-Python parser does it all
    YAML_LOADER: type = yaml.SafeLoader
else:
    class _LibyamlSafeLoader(yaml.CSafeLoader):
        """libyaml's scanner and parser (C: most of the time on a large spec) with a composer
        that builds the same nodes as PyYAML's, in a loop. libyaml's own composer recurses in C
        (a spec nested ~40,000 levels deep crashes the process) and PyYAML's in Python (a few
        hundred levels: RecursionError); this one has no depth limit but memory."""

        saw_alias = False  # set by the composer: without aliases the nodes are a tree

        def get_single_node(self) -> yaml.Node | None:
            self.get_event()  # stream start
            document = None
            if not self.check_event(StreamEndEvent):
                self.get_event()  # document start
                document = self._compose_nodes()
                self.get_event()  # document end
            if not self.check_event(StreamEndEvent):
                event: Any = self.get_event()
                raise ComposerError("expected a single document in the stream",
                                    document.start_mark if document else None,
                                    "but found another document", event.start_mark)
            self.get_event()  # stream end
            return document

        def _compose_nodes(self) -> yaml.Node:
            """PyYAML's Composer.compose_node without recursion (no path resolvers: the safe
            loader has none). An anchor names its collection before the collection's items
            are read, as in PyYAML, so `&a [*a]` is the cycle Lines.walk refuses."""
            anchors: dict[str, yaml.Node] = {}
            resolved: dict[tuple[type, Any, Any], str] = {}  # (node kind, value, implicit) → tag
            open_nodes: list[tuple[yaml.Node, list[yaml.Node]]] = []  # (node, key awaiting value)
            while True:
                if len(open_nodes) > MAX_YAML_DEPTH:
                    raise YamlTooComplex(open_nodes[-1][0].start_mark.line + 1, f"values "
                                          f"nested more than {MAX_YAML_DEPTH:,} levels deep; "
                                          "flatten them")
                if open_nodes and self.check_event(SequenceEndEvent, MappingEndEvent):
                    done, _ = open_nodes.pop()
                    done.end_mark = self.get_event().end_mark  # type: ignore[union-attr]
                else:
                    event: Any = self.get_event()  # PyYAML's event stubs name no attributes
                    if isinstance(event, AliasEvent):
                        self.saw_alias = True
                        if event.anchor not in anchors:
                            raise ComposerError(None, None, f"found undefined alias "
                                                f"{event.anchor!r}", event.start_mark)
                        done = anchors[event.anchor]
                    else:
                        if event.anchor is not None and event.anchor in anchors:
                            raise ComposerError(f"found duplicate anchor {event.anchor!r}; "
                                                "first occurrence",
                                                anchors[event.anchor].start_mark,
                                                "second occurrence", event.start_mark)
                        collection = _COLLECTIONS.get(type(event))  # None: a scalar
                        tag = event.tag
                        if tag is None or tag == "!":
                            kind = collection or yaml.ScalarNode
                            known = (kind, getattr(event, "value", None), event.implicit)
                            tag = resolved.get(known)
                            if tag is None:  # the same value resolves the same way
                                tag = resolved[known] = self.resolve(*known)
                        if collection is None:
                            done = yaml.ScalarNode(tag, event.value, event.start_mark,
                                                   event.end_mark, style=event.style)
                        else:
                            done = collection(tag, [], event.start_mark, None,
                                              flow_style=event.flow_style)
                        if event.anchor is not None:
                            anchors[event.anchor] = done
                        if collection is not None:
                            open_nodes.append((done, []))
                            continue
                if not open_nodes:
                    return done
                parent, key = open_nodes[-1]
                if isinstance(parent, yaml.SequenceNode):
                    parent.value.append(done)
                elif key:
                    parent.value.append((key.pop(), done))
                else:
                    key.append(done)

    YAML_LOADER = _LibyamlSafeLoader


_STR, _MAP, _SEQ = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:map",
                    "tag:yaml.org,2002:seq")
# Scalars the plain path builds with the safe loader's own constructors (the str ones are
# their text); a merge key (`<<`), a value key (`=`) or any other tag takes the general path.
_PLAIN_SCALARS = frozenset({_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                            "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
                            "tag:yaml.org,2002:timestamp"})


class _NotPlain(Exception):
    """The document needs the general path (nodes, then data)."""


def _plain_document(text: str) -> tuple[dict, dict[Path_, int]] | None:
    """(data, the line of every path) of a plain mapping document, built from libyaml's
    events in one pass: the data the safe loader constructs and the lines `Lines.walk`
    records, without a node per value (they were half of parsing a 15,000-line spec). None
    when the document is anything else, or anything goes wrong (the general path then
    builds it, or says what is wrong, as it always did)."""
    if YAML_LOADER is yaml.SafeLoader:  # no libyaml: the general path only
        return None
    loader = YAML_LOADER(text)
    try:
        return _plain_events(loader)
    except Exception:  # the general path parses again, and raises or reports as it did
        return None
    finally:
        loader.dispose()


def _plain_events(loader: Any) -> tuple[dict, dict[Path_, int]] | None:
    get_event, resolve = loader.get_event, loader.resolve
    constructors = loader.yaml_constructors
    if type(get_event()) is not StreamStartEvent or type(get_event()) is not DocumentStartEvent:
        return None
    lines: dict[Path_, int] = {}
    resolved: dict[tuple[Any, Any], str] = {}  # (scalar value or collection, implicit) → tag
    root: Any = None
    # Open collections: (container, its path, for a mapping the raw keys seen and the entry
    # whose value comes next: its path and key).
    open_: list[tuple[Any, Path_, set[str] | None, list[Any]]] = []
    values = 0
    while True:
        event: Any = get_event()
        kind = type(event)
        if kind is ScalarEvent:
            if event.anchor is not None or event.tag not in (None, "!"):
                raise _NotPlain
            known = (event.value, event.implicit)
            tag = resolved.get(known)
            if tag is None:
                tag = resolved[known] = resolve(yaml.ScalarNode, *known)
            if tag not in _PLAIN_SCALARS:
                raise _NotPlain
            value = event.value if tag == _STR else constructors[tag](loader, yaml.ScalarNode(
                tag, event.value, event.start_mark, event.end_mark, style=event.style))
            collection = None
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            is_map = kind is MappingStartEvent
            known = (kind, event.implicit)
            tag = resolved.get(known)
            if tag is None:
                tag = resolved[known] = resolve(yaml.MappingNode if is_map
                                                else yaml.SequenceNode, None, event.implicit)
            if event.anchor is not None or event.tag not in (None, "!") or tag != (
                    _MAP if is_map else _SEQ):
                raise _NotPlain
            value = collection = {} if is_map else []
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            done = open_.pop()
            if done[3]:  # a key without its value cannot be: libyaml gives the value
                raise _NotPlain
            continue
        elif kind is DocumentEndEvent:
            break
        else:  # an alias, or anything unexpected
            raise _NotPlain
        if len(open_) > MAX_YAML_DEPTH:
            raise _NotPlain  # the general path says so
        line = event.start_mark.line + 1
        if not open_:
            root, path = value, ()
            lines[path] = line
        else:
            parent, parent_path, seen, entry = open_[-1]
            if seen is None:  # a sequence item
                path = (*parent_path, len(parent))
                parent.append(value)
                lines[path] = line
            elif not entry:  # a mapping key: a scalar, said once
                if collection is not None or event.value in seen:
                    raise _NotPlain
                seen.add(event.value)
                path = (*parent_path, event.value)
                lines[path] = line
                entry += [path, value]
                continue
            else:  # its value: the entry's line is its key's
                path, key = entry
                entry.clear()
                parent[key] = value
        values += 1  # as Lines.walk counts: every value, the root included, no key
        if values > MAX_YAML_NODES:
            raise _NotPlain  # the general path says so
        if collection is not None:
            open_.append((collection, path, set() if type(collection) is dict else None, []))
    if type(get_event()) is not StreamEndEvent or not isinstance(root, dict):
        return None  # another document follows, or the spec is not a mapping
    return root, lines


def _compose_and_construct(text: str, loader_class: type
                           ) -> tuple[yaml.Node | None, Any, bool]:
    """(node tree, data, whether it may hold aliases) of a YAML document in one pass: the
    nodes keep every line number and the data is built from them, not parsed a second time."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        return node, data, getattr(loader, "saw_alias", True)
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str) -> tuple[dict | None, Lines, list[SpecError]]:
    """(the document if it is a mapping, its lines, the errors naming file and line)."""
    lines = Lines()
    try:
        data, errors = _parse(text, file, lines)
    except YamlTooComplex as bad:
        data, errors = None, [SpecError(file, bad.line, "", f"not usable YAML: {bad.message}")]
    except RecursionError:
        data, errors = None, [SpecError(file, 1, "", "not usable YAML: values nested too "
                                        "deeply (hundreds of levels of [ or {); flatten them")]
    return data, lines, errors


def _parse(text: str, file: str, lines: Lines) -> tuple[dict | None, list[SpecError]]:
    plain = _plain_document(text)
    if plain is not None:
        data, lines.lines = plain
        return data, []
    try:
        node, data, aliases = _compose_and_construct(text, YAML_LOADER)
    except yaml.YAMLError:
        pass  # said again below by the pure-Python parser, whose messages are clearer
    else:
        return _mapping(node, data, file, lines, aliases)
    try:
        node, data, aliases = _compose_and_construct(text, yaml.SafeLoader)
    except yaml.MarkedYAMLError as bad:
        mark = bad.problem_mark or bad.context_mark
        line = mark.line + 1 if mark else 1
        return None, [SpecError(file, line, "", f"not valid YAML: {bad.problem}")]
    except yaml.reader.ReaderError as bad:  # a control character: it carries no mark
        line = text[:bad.position].count("\n") + 1
        shown = f"#x{bad.character:04x}" if isinstance(bad.character, int) else "a character"
        return None, [SpecError(file, line, "", f"not valid YAML: {shown} is not allowed (a "
                                "control character?); remove it")]
    return _mapping(node, data, file, lines, aliases)


def _mapping(node: yaml.Node | None, data: Any, file: str, lines: Lines,
             aliases: bool = True) -> tuple[dict | None, list[SpecError]]:
    """The parsed document if it is a mapping; its lines and duplicate keys recorded."""
    if not isinstance(data, dict) or node is None:
        return None, [SpecError(file, 1, "", "a workflow spec is a mapping with a `workflow:` "
                                "section and named sections")]
    lines.walk(node, aliases)
    return data, [SpecError(file, line, ".".join(map(str, path)), "duplicate key: the later "
                            "value would silently win") for path, line in lines.duplicates]
