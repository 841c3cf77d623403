"""Files a user brings, and errors that point into them: `file:line:column: message`.

A scenario, a pool manifest or a trace that cannot be used is the user's to fix, so every
problem says where it is: a YAML syntax error carries the parser's mark; a value the schema
rejects carries the mark of the node that holds it (found by walking the pydantic error's
location through the composed YAML); a CSV problem carries its line and the column where the
field starts (`traces`). `chiron-sim` prints them as they are and exits 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from chiron_operator.api.base import wire_path
from chiron_operator.api.rules import RULE_ERROR_TYPE

# How pydantic says "unknown field": for models, and for the (pydantic) dataclasses of tunables.
_UNKNOWN_FIELD: Final = frozenset({"extra_forbidden", "unexpected_keyword_argument"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem at a 1-based line and column of a file."""

    line: int
    column: int
    message: str


class UsageError(ValueError):
    """A command line or an argument the simulator cannot act on; the message says which."""


class SourceError(ValueError):
    """A file that cannot be used; its message has one `path:line:column: problem` per line."""

    def __init__(self, path: str | Path, problems: Sequence[Problem]) -> None:
        self.path = str(path)
        self.problems = tuple(problems)
        super().__init__(
            "\n".join(f"{self.path}:{p.line}:{p.column}: {p.message}" for p in self.problems)
        )

    def __reduce__(self) -> tuple[type[SourceError], tuple[str, tuple[Problem, ...]]]:
        # Runs happen in worker processes: the error must survive the trip back.
        return (SourceError, (self.path, self.problems))


def at(path: str | Path, line: int, column: int, message: str) -> SourceError:
    """A SourceError with a single problem."""
    return SourceError(path, [Problem(line, column, message)])


def read_text(path: str | Path) -> str:
    """The file as UTF-8 text (a byte-order mark is dropped); a decoding error names its line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise at(path, line, 1, f"not UTF-8 text ({error.reason})") from None


def read_yaml_documents(path: str | Path) -> list[tuple[Any, yaml.Node]]:
    """Every document of a YAML file with the node it was built from (for locating errors)."""
    loader = yaml.SafeLoader(read_text(path))
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:  # check_node said there is one; the stubs cannot know
                documents.append((loader.construct_document(node), node))
        return documents
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = f" ({error.context})" if error.context else ""
        raise at(path, line, column, f"invalid YAML: {error.problem}{context}") from None
    finally:
        loader.dispose()


def read_yaml_mapping(path: str | Path, what: str) -> tuple[dict[str, Any], yaml.Node]:
    """The one document of a YAML file, which must be a mapping (`what` names it in errors)."""
    documents = read_yaml_documents(path)
    if not documents:
        raise at(path, 1, 1, f"empty file: {what} is a YAML mapping")
    if len(documents) > 1:
        mark = documents[1][1].start_mark
        raise at(path, mark.line + 1, mark.column + 1, f"{what} is one YAML document, not several")
    data, node = documents[0]
    if not isinstance(data, dict):
        mark = node.start_mark
        kind = type(data).__name__
        raise at(path, mark.line + 1, mark.column + 1, f"{what} is a mapping, got {kind}")
    return data, node


def located(path: str | Path, root: yaml.Node, error: ValidationError) -> SourceError:
    """A pydantic error on the data of `root` as problems at the YAML nodes they are about."""
    return SourceError(path, [_problem(root, detail) for detail in error.errors(include_url=False)])


def position(root: yaml.Node, loc: Sequence[str | int]) -> tuple[int, int]:
    """1-based (line, column) of the value at `loc`, or of the nearest mapping holding it."""
    mark = _walk(root, loc)[0].start_mark
    return mark.line + 1, mark.column + 1


def _problem(root: yaml.Node, detail: ErrorDetails) -> Problem:
    node, key, shown = _walk(root, detail["loc"])
    unknown = detail["type"] in _UNKNOWN_FIELD
    # An unknown field is about its key; anything else about the value that is there.
    mark = (key if key is not None and unknown else node).start_mark
    message = "unknown field" if unknown else detail["msg"].removeprefix("Value error, ")
    field = wire_path(shown)
    # A cross-field rule's message names its fields itself.
    named = field and detail["type"] != RULE_ERROR_TYPE
    return Problem(mark.line + 1, mark.column + 1, f"{field}: {message}" if named else message)


def _walk(
    root: yaml.Node, loc: Sequence[str | int]
) -> tuple[yaml.Node, yaml.Node | None, list[str | int]]:
    """The deepest node of `loc` present in the file, its key node, and the path to show.

    A discriminated union puts the tag (a part's `kind`) in the location although the file
    has no such key: it is skipped. A part the file lacks (a missing field) stops the walk at
    the mapping that should hold it and is still shown.
    """
    node, key = root, None
    shown: list[str | int] = []
    for index, part in enumerate(loc):
        found = _child(node, part)
        if found is None and _kind_of(node) == part:
            continue
        if found is None:
            shown.extend(loc[index:])
            break
        key, node = found
        shown.append(part)
    return node, key, shown


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        return next(
            ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part),
            None,
        )
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None


def _kind_of(node: yaml.Node) -> str | None:
    found = _child(node, "kind")
    return found[1].value if found is not None and isinstance(found[1].value, str) else None
