"""Model resolution: demo, local directories, hub ids (offline here), sizes and context."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

from node_agent import demo_model
from node_agent.errors import LoadFailed, UnknownModel
from node_agent.models import model_weights_bytes, read_context_length, resolve
from node_agent.types import LoadProgress, LoadStage


def _model_dir(
    root: Path,
    name: str = "tiny",
    *,
    config: object = None,
    weights: dict[str, int] | None = None,
) -> Path:
    """A directory shaped like a model: a config.json and weight files of the given sizes."""
    path = root / name
    path.mkdir(parents=True)
    config = {"max_position_embeddings": 4096} if config is None else config
    (path / "config.json").write_text(json.dumps(config))
    for file_name, size in ({"model.safetensors": 100} if weights is None else weights).items():
        (path / file_name).write_bytes(b"\0" * size)
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub access switched off the way users switch it off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_demo_resolves_to_the_generated_model(demo_model_dir: Path) -> None:
    data_dir = demo_model_dir.parent.parent
    resolved = resolve("demo", data_dir)
    assert (resolved.name, resolved.source, resolved.path) == ("demo", "demo", demo_model_dir)


def test_absolute_path_is_served_under_its_directory_name(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, "qwen3-tiny")
    resolved = resolve(str(path), tmp_path / "data")
    assert (resolved.name, resolved.source, resolved.path) == ("qwen3-tiny", str(path), path)


def test_relative_path_resolves_against_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _model_dir(tmp_path / "models", "llama")
    monkeypatch.chdir(tmp_path)
    assert resolve("models/llama", tmp_path / "data").path == path
    assert resolve("./models/llama", tmp_path / "data").path == path


def test_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _model_dir(tmp_path, "mine")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/mine", tmp_path / "data").path == path


def test_missing_path_is_unknown_and_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UnknownModel, match=re.escape(str(missing))):
        resolve(str(missing), tmp_path / "data")


def test_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModel, match=r"no config\.json"):
        resolve(str(tmp_path / "empty"), tmp_path / "data")


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(UnknownModel, match="no model directory"):
        resolve(str(tmp_path / "model.gguf"), tmp_path / "data")


def test_directory_without_weights_fails_to_load(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, weights={"README.md": 10})
    with pytest.raises(LoadFailed, match="no weights"):
        resolve(str(path), tmp_path / "data")


def test_reference_that_is_neither_path_nor_hub_id(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match="expected 'demo'"):
        resolve("no such model", tmp_path / "data")


@pytest.mark.usefixtures("offline")
def test_hub_id_offline_and_not_cached_is_a_clear_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel, match=r"could not download acme/tiny-llama: offline mode"):
        resolve("acme/tiny-llama", tmp_path / "data")


@pytest.mark.usefixtures("offline")
def test_hub_id_offline_uses_the_cached_snapshot(tmp_path: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "data" / "hub" / "models--acme--tiny-llama"
    snapshot = _model_dir(repo / "snapshots", sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    resolved = resolve("acme/tiny-llama", tmp_path / "data")
    assert (resolved.name, resolved.path) == ("acme/tiny-llama", snapshot)


def test_unreachable_hub_falls_back_to_a_clear_unknown_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(UnknownModel, match="could not download acme/x: ConnectionError: Name"):
        resolve("acme/x", tmp_path / "data")


def test_hub_download_reports_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing gives the total; bytes landing in the cache's blobs folder give progress."""
    files = {"config.json": 20, "model.safetensors": 4000, "README.md": 9, "original/x.pth": 9}
    siblings = [SimpleNamespace(rfilename=n, size=s) for n, s in files.items()]
    info = SimpleNamespace(sha="f" * 40, siblings=siblings)
    calls: list[dict[str, object]] = []

    def fake_download(repo_id: str, *, cache_dir: Path, allow_patterns: list[str]) -> str:
        calls.append({"repo_id": repo_id, "allow_patterns": sorted(allow_patterns)})
        repo = cache_dir / "models--acme--tiny"
        (repo / "blobs").mkdir(parents=True)
        (repo / "blobs" / "a.incomplete").write_bytes(b"\0" * 1000)
        time.sleep(0.7)  # longer than one poll, so the partial file is reported
        return str(_model_dir(repo / "snapshots", "f" * 40))

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *a, **k: info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    reports: list[LoadProgress] = []
    resolved = resolve("acme/tiny", tmp_path / "data", reports.append)
    assert resolved.name == "acme/tiny"
    assert calls == [
        {"repo_id": "acme/tiny", "allow_patterns": ["config.json", "model.safetensors"]}
    ]
    assert {r.stage for r in reports} == {LoadStage.DOWNLOADING}
    assert {r.bytes_total for r in reports} == {4020}
    done = [r.bytes_done for r in reports]
    assert done == sorted(done) and done[-1] == 4020 and 1000 in done


def test_weights_bytes_counts_safetensors_only_when_present(tmp_path: Path) -> None:
    both = _model_dir(tmp_path, "both", weights={"a.safetensors": 300, "b.safetensors": 200})
    (both / "training_args.bin").write_bytes(b"\0" * 50)
    assert model_weights_bytes(both) == 500
    pickles = _model_dir(tmp_path, "pickles", weights={"pytorch_model.bin": 70})
    assert model_weights_bytes(pickles) == 70


def test_demo_weights_bytes_is_its_safetensors_size(demo_model_dir: Path) -> None:
    size = (demo_model_dir / "model.safetensors").stat().st_size
    assert model_weights_bytes(demo_model_dir) == size


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"max_position_embeddings": 32768}, 32768),
        ({"n_positions": 1024}, 1024),
        ({"text_config": {"max_position_embeddings": 8192}}, 8192),
    ],
)
def test_context_length_from_config(tmp_path: Path, config: object, expected: int) -> None:
    assert read_context_length(_model_dir(tmp_path, config=config)) == expected


def test_missing_context_length_fails_to_load(tmp_path: Path) -> None:
    with pytest.raises(LoadFailed, match="no context length"):
        read_context_length(_model_dir(tmp_path, config={"hidden_size": 8}))


def test_demo_context_length(demo_model_dir: Path) -> None:
    assert read_context_length(demo_model_dir) == demo_model.CONTEXT


def test_generating_the_demo_model_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_model, "write_demo_model", lambda out: None)
    reports: list[LoadProgress] = []
    resolve("demo", tmp_path, reports.append)
    resolve("demo", tmp_path, reports.append)
    assert [(r.stage, r.message) for r in reports] == [
        (LoadStage.RESOLVING, "generating the demo model")
    ]


def test_a_symlinked_directory_keeps_its_own_name(tmp_path: Path) -> None:
    target = _model_dir(tmp_path, "blobs-1234")
    (tmp_path / "llama-3b").symlink_to(target)
    assert resolve(str(tmp_path / "llama-3b"), tmp_path / "data").name == "llama-3b"


def test_kv_bytes_per_token_counts_keys_and_values_of_every_kv_head(tmp_path: Path) -> None:
    from node_agent.models import kv_bytes_per_token

    config = {
        "max_position_embeddings": 4096,
        "num_hidden_layers": 28,
        "hidden_size": 2048,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "torch_dtype": "bfloat16",
    }
    path = _model_dir(tmp_path, config=config)
    assert kv_bytes_per_token(path) == 2 * 28 * 8 * (2048 // 16) * 2


def test_models_on_disk_reports_demo_and_hub_snapshots_with_their_sizes(tmp_path: Path) -> None:
    from node_agent.models import models_on_disk

    demo_model.ensure_demo_model(tmp_path)
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots"
    config = {
        "max_position_embeddings": 512,
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "torch_dtype": "float32",
    }
    _model_dir(snapshot, "abc123", config=config, weights={"model.safetensors": 1000})
    found = {d.source: d for d in models_on_disk(tmp_path)}
    assert set(found) == {"demo", "org/tiny"}
    assert found["org/tiny"].weights_bytes == 1000
    assert found["org/tiny"].kv_bytes_per_token == 2 * 2 * 4 * 16 * 4
    assert found["org/tiny"].context_length == 512
    assert found["demo"].weights_bytes == model_weights_bytes(demo_model.demo_model_path(tmp_path))
