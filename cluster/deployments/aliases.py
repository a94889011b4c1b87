"""Model aliases: other names for served models, so that clients asking for `claude-…` or
`gpt-…` names reach local ones. Pure: the controller checks and orders them, gateways resolve.

A requested name resolves, in this order, to:

1. itself, when a node serves a model of that name (a real model always wins);
2. the target of the alias of exactly that name;
3. the target of the first glob alias (fnmatch `*`, `?`, `[...]`, case-sensitive) that matches
   it, the most specific first: the most literal characters (those outside a wildcard), then
   the fewest `*`, then the pattern's text;
4. itself, unchanged (and the usual 404 if nothing serves it).

One level only: a target is a model name and is never resolved again, so no table can loop
and every alias reads as what it does. The chains the admin could mean (a target that is an
exact alias, or a name that is another alias's target) are refused when an alias is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from cluster.errors import InvalidRequest, ModelNotFound
from cluster.types import ModelAlias, ModelName, NodeTable

MAX_NAME = 256
_WILDCARD = re.compile(r"\*|\?|\[!?\]?[^\]]*\]")  # what fnmatch treats as a wildcard
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


def is_glob(name: str) -> bool:
    """Whether `name` holds a wildcard, so matches names rather than being one."""
    return _WILDCARD.search(name) is not None


def specificity(pattern: str) -> tuple[int, int, str]:
    """How a glob sorts among globs, most specific first (see the module's docstring)."""
    literal = len(_WILDCARD.sub("", pattern))
    return (-literal, pattern.count("*"), pattern)


def ordered(aliases: Mapping[str, str]) -> tuple[ModelAlias, ...]:
    """The aliases in resolution order: exact names (by name), then globs by specificity."""
    exact = sorted(n for n in aliases if not is_glob(n))
    globs = sorted((n for n in aliases if is_glob(n)), key=specificity)
    return tuple(ModelAlias(n, ModelName(aliases[n])) for n in (*exact, *globs))


def resolve(name: str, served: Collection[str], aliases: Sequence[ModelAlias]) -> str:
    """The model a request for `name` goes to; `aliases` in resolution order (`ordered`)."""
    if name in served:
        return name
    for alias in aliases:
        if alias.name == name or (is_glob(alias.name) and fnmatchcase(name, alias.name)):
            return alias.target
    return name


def resolve_in(table: NodeTable, name: str) -> ModelName:
    """`resolve` on a gateway's table; the 404 for an alias to what no node serves names both."""
    if not table.aliases:
        return ModelName(name)
    served = {m for n in table.nodes for m in n.models}
    target = resolve(name, served, table.aliases)
    if target != name and target not in served:
        raise ModelNotFound(
            f"The model `{name}` is an alias of `{target}`, which does not exist or is not "
            "served here."
        )
    return ModelName(target)


def check(name: str, target: str, existing: Mapping[str, str], deployed: Collection[str]) -> None:
    """Refuse (InvalidRequest) an alias that is malformed, would never apply, or would chain."""
    for what, value in (("name", name), ("model", target)):
        if not value or len(value) > MAX_NAME or _BAD_CHARS.search(value):
            raise InvalidRequest(
                f"alias {what} {value!r}: 1 to {MAX_NAME} characters, no spaces", param=what
            )
    if is_glob(target):
        raise InvalidRequest(f"the model {target!r} is a pattern; name one model", param="model")
    if target == name:
        raise InvalidRequest(f"{name!r} cannot be an alias of itself", param="model")
    if name in deployed:
        raise InvalidRequest(f"{name!r} is a deployed model: it would never apply", param="name")
    if target in existing:
        raise InvalidRequest(
            f"{target!r} is itself an alias (of {existing[target]!r}); aliases resolve one "
            f"level only, so alias {name!r} to {existing[target]!r}",
            param="model",
        )
    users = sorted(n for n, t in existing.items() if t == name and n != name)
    if users:
        raise InvalidRequest(
            f"{name!r} is the model that {', '.join(map(repr, users))} point to; aliases "
            "resolve one level only",
            param="name",
        )


def parse_target(body: bytes) -> ModelName:
    """The `model` of a PUT /admin/aliases/{name} body."""
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise InvalidRequest("which model does the alias name? give `model`", param="model")
    return ModelName(data["model"])


def alias_json(alias: ModelAlias) -> dict[str, Any]:
    """An alias as the admin API shows it."""
    return {"name": alias.name, "model": alias.target, "glob": is_glob(alias.name)}


def listed_aliases(table: NodeTable, models: Collection[str]) -> list[ModelAlias]:
    """The aliases `/v1/models` lists beside `models`: exact ones (a glob names no model) whose
    target is among them, and that no served model of the same name hides."""
    served = {m for n in table.nodes for m in n.models}
    return [
        a
        for a in table.aliases
        if not is_glob(a.name) and a.target in models and a.name not in served
    ]
