"""Reading a config's text: YAML bounded against hostile files, and `a.b.c=value` overrides on top of it.

Apart from hone.config's schema so that the schema reads alone; everything here is plain data (dicts,
lists, scalars) before validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hone.errors import HoneError, quoted, value_problem

# A config is a few hundred values; these bound what a hostile or broken file can make hone do.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000  # counted with every alias expanded
MAX_CONFIG_DEPTH = 100  # sections inside sections; a config needs about 5, Python's copies stop near 500


def bounded_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load`, refusing documents whose aliases expand past MAX_CONFIG_VALUES values.

    An alias is shared rather than copied when loaded, so a 300-byte "billion laughs" loads in a blink;
    but copying, validating and quoting it in an error walk the expanded tree: 10^9 values. The document
    is composed first and its expanded size counted on the node graph, before anything is built from it.
    Nesting beyond Python's recursion limit and integers longer than it converts are refused too.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise HoneError(f"{source}: nested too deeply to read") from None
    except ValueError as exc:  # yaml.YAMLError is not one; int() past sys.get_int_max_str_digits() is
        raise HoneError(f"{source}: unreadable value: {value_problem(exc)}") from None
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node, source: str) -> int:
    """How many values the document holds once every alias is expanded; a HoneError past the limit."""
    sizes: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[yaml.Node, bool, int]] = [(root, False, 1)]
    while stack:
        node, children_done, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            line = node.start_mark.line + 1
            raise HoneError(
                f"{source} line {line}: nested more than {MAX_CONFIG_DEPTH} levels deep; a config needs 5"
            )
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        if children_done:
            sizes[id(node)] = size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_CONFIG_VALUES:
                line = node.start_mark.line + 1
                raise HoneError(
                    f"{source} line {line}: its aliases expand to more than {MAX_CONFIG_VALUES:,} values; "
                    "a config needs a few hundred (is this a YAML alias bomb?)"
                )
        elif id(node) not in sizes:
            if id(node) in started:  # met again before it was counted: it contains itself
                line = node.start_mark.line + 1
                raise HoneError(f"{source} line {line}: an alias refers to the value that contains it")
            started.add(id(node))
            stack.append((node, True, depth))
            stack.extend((child, False, depth + 1) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise HoneError(f"{path}: config file not found")
    if not path.is_file():  # a folder, or a FIFO or device that would block or never end
        raise HoneError(f"{path}: not a regular file; expected a YAML config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        size = path.stat().st_size
        raise HoneError(f"{path}: {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,} bytes")
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw_bytes.count(b"\n", 0, exc.start) + 1
        raise HoneError(
            f"{path} line {line}: not UTF-8: byte 0x{raw_bytes[exc.start]:02x} at byte offset {exc.start}; "
            "save the config as UTF-8"
        ) from None
    try:
        raw = bounded_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise HoneError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HoneError(
            f"{path}: expected a mapping of sections (model, data, train, ...), got {type(raw).__name__}"
        )
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value`; the value is read as YAML so numbers, booleans and lists get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise HoneError(f"override {text!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    try:
        value = bounded_yaml(raw, f"override {quoted(text)}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted key in a copy of the raw config dict; intermediate sections are created."""
    result: dict[str, Any] = yaml.safe_load(yaml.safe_dump(raw)) if raw else {}
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if isinstance(child, str) and path[: depth + 1] == ["train", "adapter"]:
                child = {"kind": child}  # `adapter: lora` shorthand, then `train.adapter.r=8`
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise HoneError(f"override {text!r}: {'.'.join(path[: depth + 1])} is not a section")
            node[part] = child
            node = child
        node[path[-1]] = value
    return result
