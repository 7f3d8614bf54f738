"""Registry references and names: what parses, and the error for what does not."""

from __future__ import annotations

import pytest

from hone.errors import HoneError
from hone.registry.refs import Ref, check_alias, check_name, is_ref, parse_ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("support-tickets", Ref("support-tickets")),
        ("support-tickets/3", Ref("support-tickets", version=3)),
        ("support.v2_b@production", Ref("support.v2_b", alias="production")),
        ("x@canary-1", Ref("x", alias="canary-1")),
    ],
)
def test_references_parse(text: str, expected: Ref) -> None:
    assert parse_ref(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text", ["", "../x", "x/0", "x/-1", "x/1.5", "x@", "x@Prod", "x@@y", "x/1@y", "/x", "x y", "x/01"]
)
def test_bad_references_are_clear_errors(text: str) -> None:
    with pytest.raises(HoneError, match="expected NAME, NAME/VERSION or NAME@ALIAS"):
        parse_ref(text)


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "-x", ".x", "a:b", "x" * 101, "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(HoneError, match="registry name"):
        check_name(name)


@pytest.mark.parametrize("alias", ["latest", "v3", "Production", "1st", ""])
def test_reserved_and_bad_aliases(alias: str) -> None:
    with pytest.raises(HoneError, match="alias"):
        check_alias(alias)


def test_only_a_version_or_alias_makes_a_reference_rather_than_a_path() -> None:
    assert is_ref("support/3") and is_ref("support@production")
    assert not is_ref("support") and not is_ref("runs/sft-lora-1") and not is_ref("./support/3")
