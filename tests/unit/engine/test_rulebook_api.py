"""The rulebook's lookups and its canonical form (what a stored version is compared by)."""

from __future__ import annotations

import json

import engine
from engine.rulebook import DEFAULT_SCHEME


def _rb(schemes: dict[str, object], restrictions: list[object] | None = None) -> engine.Rulebook:
    return engine.Rulebook.from_mapping({"schemes": schemes,
                                         "restrictions": restrictions or []}, "t")


def test_a_scheme_by_name_then_the_books_default_then_the_builtin_default() -> None:
    rb = _rb({"default": {"method": "equal"}, "core": {"method": "pari_passu"}})
    assert rb.scheme("core").method == "pari_passu"
    assert rb.scheme("missing").method == "equal"
    assert _rb({"core": {"method": "pari_passu"}}).scheme("missing") == DEFAULT_SCHEME
    assert DEFAULT_SCHEME.method == "pro_rata"


def test_the_canonical_json_does_not_depend_on_key_order() -> None:
    one = _rb({"core": {"method": "pari_passu", "tie_break": "rotation"},
               "default": {"method": "equal"}})
    two = _rb({"default": {"method": "equal"},
               "core": {"tie_break": "rotation", "method": "pari_passu"}})
    assert one.canonical_json() == two.canonical_json()
    assert json.loads(one.canonical_json())["schemes"]["core"]["method"] == "pari_passu"
    assert one.canonical_json() != _rb({"default": {"method": "pro_rata"}}).canonical_json()
