"""A gateway's routes: read from the config dir, read again only when its files change."""

from __future__ import annotations

from pathlib import Path

from cluster.providers import store
from cluster.providers.book import RouteBook
from cluster.providers.specs import Provider, parse_target

OA = Provider(name="oa", kind="openai", base_url="http://h/v1")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_routes_are_read_again_when_the_files_change(tmp_path: Path) -> None:
    clock = Clock()
    book = RouteBook(tmp_path, check_every_s=1.0, clock=clock)
    assert book.lookup("gpt-x") is None
    store.put(tmp_path, OA, "sk-one")
    store.put_route(tmp_path, parse_target("gpt-x", "oa:demo"))
    assert book.lookup("gpt-x") is None  # not looked at again within the second
    clock.now = 1.0
    found = book.lookup("gpt-x")
    assert found is not None and found.route.remote_model == "demo"
    assert found.provider == OA and book.key(found) == "sk-one"
    store.remove_route(tmp_path, "gpt-x")
    clock.now = 2.0
    assert book.lookup("gpt-x") is None


def test_a_broken_file_keeps_the_last_good_routes(tmp_path: Path) -> None:
    clock = Clock()
    store.put(tmp_path, OA, "sk-one")
    store.put_route(tmp_path, parse_target("gpt-x", "oa"))
    book = RouteBook(tmp_path, clock=clock)
    assert book.lookup("gpt-x") is not None
    (tmp_path / store.ROUTES_FILE).write_text("{")
    clock.now = 5.0
    assert book.lookup("gpt-x") is not None


def test_without_a_config_dir_nothing_is_rented() -> None:
    assert RouteBook(None).lookup("gpt-x") is None


def test_an_overflow_route_is_no_served_route(tmp_path: Path) -> None:
    store.put(tmp_path, OA, "sk-one")
    store.put_route(tmp_path, parse_target("demo", "oa:gpt-x", overflow_wait_s=1.5))
    store.put_route(tmp_path, parse_target("big", "oa"))
    book = RouteBook(tmp_path)
    assert book.lookup("demo") is None  # local nodes come first
    found = book.overflow("demo")
    assert found is not None and found.route.overflow_wait_s == 1.5
    assert book.overflow("big") is None and book.lookup("big") is not None
    assert book.routed() == {"big": "oa"}  # /v1/models lists only what no node serves
