"""Label and field selectors as the API server evaluates them."""

from __future__ import annotations

import pytest

from chiron_operator.devcluster.cluster.selectors import (
    SelectorError,
    matches_selector_object,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"chiron.io/pool": "p1", "chiron.io/role": "mixed", "tier": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("chiron.io/pool=p1", True),
        ("chiron.io/pool==p1", True),
        ("chiron.io/pool=p2", False),
        ("chiron.io/pool!=p2", True),
        ("missing!=x", True),  # != matches objects without the label
        ("chiron.io/role in (interactive, mixed)", True),
        ("chiron.io/role in (batch)", False),
        ("chiron.io/role notin (batch,interactive)", True),
        ("missing notin (a)", True),
        ("chiron.io/pool", True),
        ("!chiron.io/pool", False),
        ("!missing", True),
        ("tier>2,tier<4", True),
        ("tier>3", False),
        ("chiron.io/pool=p1,chiron.io/role in (mixed,batch),!missing", True),
        ("chiron.io/pool=p1,chiron.io/role=batch", False),
    ],
)
def test_label_selector(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector)(LABELS) is expected


@pytest.mark.parametrize("selector", ["a in b", "=x", "a>b", "a==b==c"])
def test_malformed_label_selector_is_rejected(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_field_selector_reads_dotted_paths() -> None:
    obj = {"metadata": {"name": "p1", "namespace": "llm"}, "involvedObject": {"name": "pool"}}
    assert parse_field_selector("metadata.name=p1,metadata.namespace=llm")(obj)
    assert parse_field_selector("involvedObject.name==pool")(obj)
    assert not parse_field_selector("metadata.name!=p1")(obj)
    assert parse_field_selector("status.phase=")(obj)  # a missing field reads as ""
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name")


def test_structured_selector() -> None:
    selector = {
        "matchLabels": {"chiron.io/pool": "p1"},
        "matchExpressions": [
            {"key": "chiron.io/role", "operator": "In", "values": ["mixed"]},
            {"key": "gone", "operator": "DoesNotExist"},
        ],
    }
    assert matches_selector_object(selector, LABELS)
    assert not matches_selector_object({"matchLabels": {"tier": "4"}}, LABELS)
