from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from cluster.cli import admin_client
from cluster.cli.admin_client import CliError, configure, refuse_clear_token


def trust(**given: object) -> None:
    configure(argparse.Namespace(**given))


@pytest.fixture(autouse=True)
def default_trust() -> Iterator[None]:
    yield
    trust()  # the next test's CLI calls trust the system's CAs again


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"]
)
def test_loopback_may_be_plain(url: str) -> None:
    trust()
    refuse_clear_token(url)


def test_the_admin_token_never_goes_in_clear_off_loopback_unless_told() -> None:
    trust()
    with pytest.raises(
        CliError, match=r"refusing to send the admin token in clear to 192\.0\.2\.7"
    ):
        refuse_clear_token("http://192.0.2.7:8000")
    refuse_clear_token("https://192.0.2.7:8000")
    trust(insecure_http=True)
    refuse_clear_token("http://desk.local:8000")


def test_plain_urls_need_no_certificate() -> None:
    trust(fingerprint="00" * 32, ca="/nonexistent")
    assert admin_client.verify_for("http://127.0.0.1:8000") is True


def test_a_ca_that_cannot_be_read_is_one_line() -> None:
    trust(ca="/nonexistent/ca.pem")
    with pytest.raises(CliError, match=r"cannot use /nonexistent/ca\.pem as a CA"):
        admin_client.verify_for("https://127.0.0.1:8000")
