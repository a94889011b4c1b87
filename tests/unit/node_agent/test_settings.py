"""Settings from flags and METERLESS_* environment: defaults, precedence, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.settings import DEFAULT_PORT, build_parser, load


def test_defaults() -> None:
    s = load([], {})
    assert (s.host, s.port, s.models, s.engine) == ("127.0.0.1", DEFAULT_PORT, (), "auto")
    assert s.mdns is True and s.status_interval_ms == 500
    assert s.data_dir == Path.home() / ".local" / "share" / "meterless"
    assert s.cost.amortize_months == 36.0 and s.memory_limit_bytes is None


def test_xdg_data_home_moves_the_data_dir() -> None:
    assert load([], {"XDG_DATA_HOME": "/srv/data"}).data_dir == Path("/srv/data/meterless")


def test_flags() -> None:
    s = load(
        [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model",
            "demo",
            "--model",
            "org/m",
            "--engine",
            "mlx",
            "--data-dir",
            "/d",
            "--no-mdns",
            "--advertise-address",
            "10.0.0.5",
            "--interface",
            "en0",
            "--status-interval-ms",
            "250",
            "--name",
            "mini",
            "--price-usd",
            "1399",
            "--amortize-months",
            "24",
            "--idle-watts",
            "7",
            "--busy-watts",
            "60.5",
            "--kwh-usd",
            "0.31",
            "--port-file",
            "/tmp/p",
        ],
        {},
    )
    assert (s.host, s.port, s.models, s.engine) == ("127.0.0.1", 0, ("demo", "org/m"), "mlx")
    assert (s.data_dir, s.mdns, s.port_file) == (Path("/d"), False, Path("/tmp/p"))
    assert (s.advertise_addresses, s.interfaces) == (("10.0.0.5",), ("en0",))
    assert (s.status_interval_ms, s.name) == (250, "mini")
    assert (s.cost.price_usd, s.cost.amortize_months, s.cost.idle_watts) == (1399, 24, 7)
    assert (s.cost.busy_watts, s.cost.kwh_usd) == (60.5, 0.31)


def test_environment() -> None:
    env = {
        "METERLESS_PORT": "6000",
        "METERLESS_MODELS": "demo, ./m ,",
        "METERLESS_NO_MDNS": "yes",
        "METERLESS_DATA_DIR": "/var/lib/m",
        "METERLESS_KWH_USD": "0.2",
        "METERLESS_ADVERTISE_ADDRESS": "10.0.0.1,10.0.0.2",
        "METERLESS_MEMORY_LIMIT_BYTES": "99",
    }
    s = load([], env)
    assert (s.port, s.models, s.mdns) == (6000, ("demo", "./m"), False)
    assert s.data_dir == Path("/var/lib/m")
    assert s.cost.kwh_usd == 0.2 and s.memory_limit_bytes == 99
    assert s.advertise_addresses == ("10.0.0.1", "10.0.0.2")


def test_a_flag_wins_over_its_environment_variable() -> None:
    env = {"METERLESS_PORT": "6000", "METERLESS_MODELS": "a,b", "METERLESS_NAME": "env"}
    s = load(["--port", "7000", "--model", "c", "--name", "flag"], env)
    assert (s.port, s.models, s.name) == (7000, ("c",), "flag")


def test_engine_options_are_key_value_pairs_from_flags_or_environment() -> None:
    s = load(["--engine-option", "dtype=float32", "--engine-option", " max_model_len = 512"], {})
    assert s.engine_options == (("dtype", "float32"), ("max_model_len", "512"))
    env = {"METERLESS_ENGINE_OPTIONS": "gpu_memory_utilization=0.5,enforce_eager=1"}
    assert dict(load([], env).engine_options) == {
        "gpu_memory_utilization": "0.5",
        "enforce_eager": "1",
    }
    assert load([], {}).engine_options == ()


def test_mdns_env_off_switch_reads_false_values() -> None:
    assert load([], {"METERLESS_NO_MDNS": "0"}).mdns is True
    assert load([], {"METERLESS_NO_MDNS": "true"}).mdns is False


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--port", "abc"], {}, "'abc' is not a whole number"),
        (["--port", "70000"], {}, "not a port"),
        (["--engine", "tpu"], {}, "'tpu' is not one of auto, mlx, vllm"),
        (["--price-usd", "-3"], {}, "zero or more"),
        (["--kwh-usd", "nan"], {}, "zero or more"),
        (["--amortize-months", "0"], {}, "above zero"),
        (["--status-interval-ms", "0"], {}, "above zero"),
        (["--advertise-address", "10.0.0"], {}, "not an IPv4 address"),
        (["--log-level", "loud"], {}, "'loud' is not one of"),
        (["--engine-option", "dtype"], {}, "'dtype' is not KEY=VALUE"),
        (["--engine-option", "=1"], {}, "'=1' is not KEY=VALUE"),
        (["--nope"], {}, "unrecognized arguments: --nope"),
        ([], {"METERLESS_PORT": "x"}, "METERLESS_PORT: 'x' is not a whole number"),
        ([], {"METERLESS_NO_MDNS": "maybe"}, "METERLESS_NO_MDNS: 'maybe' is not a yes/no value"),
        ([], {"METERLESS_MEMORY_LIMIT_BYTES": "-1"}, "METERLESS_MEMORY_LIMIT_BYTES"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_code_2(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load(argv, env)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("node-agent: error: ")
    assert needle in err


def test_help_explains_every_flag() -> None:
    text = build_parser().format_help()
    for flag in (
        "--host",
        "--port",
        "--port-file",
        "--model",
        "--engine",
        "--data-dir",
        "--no-mdns",
        "--advertise-address",
        "--interface",
        "--status-interval-ms",
        "--name",
        "--price-usd",
        "--amortize-months",
        "--idle-watts",
        "--busy-watts",
        "--kwh-usd",
        "--log-level",
        "--engine-option",
    ):
        assert flag in text
    assert "METERLESS_PORT" in text and "METERLESS_MEMORY_LIMIT_BYTES" not in text
