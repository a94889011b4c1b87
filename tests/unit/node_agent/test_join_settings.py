"""The agent's --join-token / METERLESS_JOIN_TOKEN setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.settings import build_parser, load
from node_agent.trust import ClusterSecret, encode_token

SECRET = ClusterSecret(bytes(range(32)))
TOKEN = encode_token(SECRET)


def test_no_token_means_no_secret() -> None:
    assert load([], {}).cluster_secret is None


def test_the_token_comes_from_the_flag_or_the_environment() -> None:
    assert load(["--join-token", TOKEN], {}).cluster_secret == SECRET
    assert load([], {"METERLESS_JOIN_TOKEN": TOKEN}).cluster_secret == SECRET


def test_settings_never_show_the_secret() -> None:
    settings = load([], {"METERLESS_JOIN_TOKEN": TOKEN})
    assert TOKEN.split(".")[1] not in repr(settings)
    assert SECRET.secret.hex() not in repr(settings)


@pytest.mark.parametrize(
    "argv, env, needle",
    [
        (["--join-token", "nonsense"], {}, "--join-token: not a join token"),
        (
            [],
            {"METERLESS_JOIN_TOKEN": TOKEN[:-1] + "0"},
            "METERLESS_JOIN_TOKEN: the join token is damaged",
        ),
    ],
)
def test_a_bad_token_is_one_line_exit_2_without_echoing_it(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load(argv, env)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert TOKEN.split(".")[1] not in err


def test_help_names_the_flag_and_its_variable() -> None:
    text = build_parser().format_help()
    assert "--join-token" in text and "METERLESS_JOIN_TOKEN" in text


def test_the_token_comes_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "join-token"
    path.write_text(TOKEN + "\n")
    assert load(["--join-token-file", str(path)], {}).cluster_secret == SECRET
    env = {"METERLESS_JOIN_TOKEN_FILE": str(path)}
    assert load([], env).cluster_secret == SECRET


def test_a_missing_token_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load(["--join-token-file", str(tmp_path / "nope")], {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err


def test_without_a_token_the_agent_listens_on_loopback_unless_insecure() -> None:
    assert load([], {}).host == "127.0.0.1"
    assert load(["--host", "::1"], {}).host == "::1"
    assert load(["--insecure"], {}).host == "0.0.0.0"
    assert load([], {"METERLESS_INSECURE": "1"}).host == "0.0.0.0"
    assert load(["--insecure", "--host", "10.0.0.5"], {}).host == "10.0.0.5"


def test_with_a_token_the_agent_listens_everywhere_by_default() -> None:
    assert load(["--join-token", TOKEN], {}).host == "0.0.0.0"
    assert load(["--join-token", TOKEN, "--host", "10.0.0.5"], {}).host == "10.0.0.5"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "office-box"])
def test_a_lan_host_without_a_token_is_one_line_exit_2(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load(["--host", host], {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--insecure" in err and "--join-token-file" in err
