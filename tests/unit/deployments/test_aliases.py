"""Model aliases (deployments/aliases.py): resolution order, specificity, the checks on setting
one, and what a gateway's table makes of them."""

from __future__ import annotations

import itertools
import random
from fnmatch import fnmatchcase

import pytest

from cluster.deployments.aliases import (
    check,
    is_glob,
    listed_aliases,
    ordered,
    parse_target,
    resolve,
    resolve_in,
    specificity,
)
from cluster.errors import InvalidRequest, ModelNotFound
from cluster.types import ModelAlias, ModelName, NodeId, NodeState, NodeTable, NodeView


def table(models: tuple[str, ...], aliases: dict[str, str]) -> NodeTable:
    """One ready node serving `models`, with `aliases`."""
    node = NodeView(
        node_id=NodeId("n1"),
        name="n1",
        address="n1:1",
        engines=("mlx",),
        state=NodeState.READY,
        models=tuple(ModelName(m) for m in models),
    )
    return NodeTable(version=1, nodes=(node,), aliases=ordered(aliases))


CLAUDE = {
    "claude-*": "big",
    "claude-*-haiku*": "small",
    "claude-haiku": "demo",
    "gpt-*": "demo",
    "gpt-4?": "old",
    "gpt-[45]o": "omni",
}


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        ("demo", "demo"),  # a served model is itself
        ("claude-haiku", "demo"),  # an exact alias, before claude-* and claude-*-haiku*
        ("claude-3-5-haiku-20241022", "small"),  # the more literal glob wins
        ("claude-sonnet-4-5", "big"),
        ("gpt-5-codex", "demo"),
        ("gpt-41", "old"),  # gpt-4? has 5 literal characters, gpt-* 4
        ("gpt-5o", "omni"),  # a [...] set is a wildcard: gpt-[45]o has 5 literal characters
        ("gpt-4o", "old"),  # gpt-4? has 5 too, and no more stars: its text sorts first
        ("llama", "llama"),  # nothing matches: unchanged
        ("Claude-haiku", "Claude-haiku"),  # case-sensitive
    ],
)
def test_a_name_resolves_to_itself_then_exact_then_the_most_specific_glob(
    asked: str, served: str
) -> None:
    assert resolve(asked, {"demo", "big", "small", "old", "omni"}, ordered(CLAUDE)) == served


def test_a_served_model_wins_over_an_alias_of_its_name() -> None:
    aliases = ordered({"gpt-*": "demo", "gpt-oss-20b": "demo"})
    assert resolve("gpt-oss-20b", {"gpt-oss-20b", "demo"}, aliases) == "gpt-oss-20b"
    assert resolve("gpt-oss-20b", {"demo"}, aliases) == "demo"


def test_one_level_only_a_target_is_never_resolved_again() -> None:
    aliases = ordered({"a": "b", "b": "c", "x*": "x1"})
    assert resolve("a", set(), aliases) == "b"
    assert resolve("x1", set(), aliases) == "x1"  # a target a glob matches stays itself
    assert resolve("xy", set(), aliases) == "x1"


def test_globs_sort_by_literal_characters_then_fewest_stars_then_text() -> None:
    assert specificity("claude-*-haiku*") < specificity("claude-*")
    assert specificity("gpt-4?") < specificity("gpt-*")  # 5 literal characters before 4
    assert specificity("ab?") < specificity("ab*")  # as literal: fewer stars first
    assert specificity("a*b") < specificity("b*a")  # a tie in both: the text decides
    names = [a.name for a in ordered(CLAUDE)]
    assert names == [
        "claude-haiku",
        "claude-*-haiku*",
        "claude-*",
        "gpt-4?",
        "gpt-[45]o",
        "gpt-*",
    ]


def test_what_counts_as_a_glob() -> None:
    assert is_glob("gpt-*") and is_glob("gpt-?") and is_glob("gpt-[45]")
    assert not is_glob("org/model-1.5") and not is_glob("odd[")  # an open [ is literal


PATTERNS = ["".join(p) for n in (1, 2, 3) for p in itertools.product("ab*?", repeat=n)]
NAMES = ["".join(p) for n in (1, 2, 3) for p in itertools.product("ab", repeat=n)]


@pytest.mark.parametrize("seed", range(200))
def test_resolution_is_the_first_matching_alias_in_order_whatever_the_insertion(
    seed: int,
) -> None:
    rng = random.Random(seed)  # a property over random tables, reproducible by seed
    chosen = rng.sample(PATTERNS, rng.randint(1, 8))
    aliases = {p: rng.choice("xyz") for p in chosen}
    shuffled = dict(rng.sample(list(aliases.items()), len(aliases)))
    assert ordered(aliases) == ordered(shuffled)
    for name in NAMES:
        got = resolve(name, set(), ordered(shuffled))
        matching = [a for a in ordered(aliases) if a.name == name or fnmatchcase(name, a.name)]
        assert got == (matching[0].target if matching else name)
        if name in aliases:  # an exact alias always wins over globs
            assert got == aliases[name]
        globs = [a for a in matching if is_glob(a.name)]
        if globs and name not in aliases:  # else the most literal matching glob
            best = min(specificity(a.name) for a in globs)
            assert specificity(next(a.name for a in globs if a.target == got)) <= best


def test_the_gateways_table_resolves_and_an_alias_to_nothing_served_names_both() -> None:
    t = table(("demo",), {"gpt-*": "demo", "claude-*": "gone"})
    assert resolve_in(t, "gpt-5-codex") == "demo"
    assert resolve_in(t, "nothing") == "nothing"  # the forwarder's usual 404 follows
    with pytest.raises(ModelNotFound, match="`claude-haiku` is an alias of `gone`"):
        resolve_in(t, "claude-haiku")
    assert resolve_in(table(("demo",), {}), "anything") == "anything"


def test_v1_models_lists_exact_aliases_of_listed_models_only() -> None:
    t = table(("demo", "claude-haiku"), {"claude-haiku": "demo", "small": "demo", "gpt-*": "demo"})
    assert listed_aliases(t, ["demo", "claude-haiku"]) == [ModelAlias("small", ModelName("demo"))]
    assert listed_aliases(t, []) == []  # the key may not use demo: nor its aliases


def test_setting_an_alias_refuses_what_would_never_apply_or_would_chain() -> None:
    existing = {"gpt-*": "demo", "fast": "demo"}
    check("claude-*", "demo", existing, {"demo"})
    check("gpt-*", "qwen", existing, {"demo"})  # replacing one is fine
    for name, model, message in (
        ("", "demo", "1 to 256"),
        ("my model", "demo", "no spaces"),
        ("x", "demo*", "is a pattern"),
        ("demo2", "demo2", "alias of itself"),
        ("demo", "qwen", "deployed model"),
        ("new", "fast", "itself an alias"),
        ("demo-like", "gpt-*", "is a pattern"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            check(name, model, existing, {"demo"})
    with pytest.raises(InvalidRequest, match="'fast' point to"):
        check("demo", "qwen", {"fast": "demo"}, set())


def test_the_put_body_names_the_model() -> None:
    assert parse_target(b'{"model": "demo"}') == "demo"
    for body in (b"", b"{}", b"[1]", b"nope", b'{"model": 3}'):
        with pytest.raises(InvalidRequest):
            parse_target(body)
