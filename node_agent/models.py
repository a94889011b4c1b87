"""Model resolution: turn a reference (`demo`, a local directory, a hub id) into local files.

    resolve("demo")                 -> the generated demo model (node_agent.demo_model)
    resolve("~/models/qwen3-4b")    -> that directory, once it looks like a model
    resolve("mlx-community/Qwen3")  -> a Hugging Face Hub snapshot under data_dir/hub

Only this module talks to the Hub; its errors leave as UnknownModel or LoadFailed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from node_agent.demo_model import DEMO_NAME, demo_model_path, ensure_demo_model
from node_agent.errors import LoadFailed, UnknownModel
from node_agent.types import DiskModel, LoadProgress, LoadStage

logger = logging.getLogger(__name__)

Progress = Callable[[LoadProgress], None]

# Top-level config, tokenizer and weights files only: no READMEs, no `original/` checkpoints,
# and no Mistral-style `consolidated` copy that would double the download.
HUB_ALLOW = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja")
HUB_IGNORE = ("*/*", "consolidated*")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")
POLL_SECONDS = 0.5
# Bytes per element of the KV cache by the config's dtype; quantised weights keep a 16-bit cache.
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """A model reference resolved to a local directory, and the name it is served under."""

    name: str
    source: str
    path: Path


def resolve(ref: str, data_dir: Path, progress: Progress | None = None) -> ResolvedModel:
    """Resolve `demo`, a local model directory or a hub id to files on this machine."""
    report = progress or _ignore
    if ref == DEMO_NAME:
        if not demo_model_path(data_dir).is_dir():
            report(LoadProgress(stage=LoadStage.RESOLVING, message="generating the demo model"))
        return ResolvedModel(name=DEMO_NAME, source=ref, path=ensure_demo_model(data_dir))
    local = Path(ref).expanduser()
    if local.exists() or _looks_like_path(ref):
        path = validate_model_dir(local)
        return ResolvedModel(name=path.name, source=ref, path=path)
    if HUB_ID.match(ref):
        path = fetch_from_hub(ref, Path(data_dir) / "hub", report)
        return ResolvedModel(name=ref, source=ref, path=path)
    raise UnknownModel(
        f"unknown model {ref!r}: expected 'demo', a model directory, or a hub id like org/name"
    )


def validate_model_dir(path: Path) -> Path:
    """Return `path` made absolute if it holds a config.json and weights; raise otherwise."""
    # abspath, not resolve: a symlinked model directory keeps the name the user gave it.
    path = Path(os.path.abspath(path.expanduser()))
    if not path.is_dir():
        raise UnknownModel(f"no model directory at {path}")
    if not (path / "config.json").is_file():
        raise UnknownModel(f"{path} is not a model directory: it has no config.json")
    if not _weight_files(path):
        raise LoadFailed(f"{path} has no weights (*.safetensors or *.bin files)")
    return path


def model_weights_bytes(path: Path) -> int:
    """Total size of the model's weight files, the floor of the memory it needs."""
    return sum(f.stat().st_size for f in _weight_files(Path(path)))


def read_context_length(path: Path) -> int:
    """The model's context length in tokens, from its config.json."""
    config = _read_config(Path(path))
    # Multimodal configs keep the language model's numbers in a nested text_config.
    for section in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            value = section.get(key)
            if isinstance(value, int) and value > 0:
                return value
    raise LoadFailed(f"{path}/config.json states no context length (one of {CONTEXT_KEYS})")


def is_decoder(path: Path) -> bool:
    """Whether config.json names a text generation architecture (`...ForCausalLM`)."""
    architectures = _read_config(Path(path)).get("architectures") or []
    return any(str(a).endswith("ForCausalLM") for a in architectures)


def kv_bytes_per_token(path: Path) -> int:
    """KV cache bytes per token of context: keys and values, every layer, every KV head."""
    config = _read_config(Path(path))
    text = config.get("text_config") or {}

    def get(key: str) -> Any:
        return config.get(key, text.get(key))

    layers, heads = int(get("num_hidden_layers") or 0), int(get("num_attention_heads") or 0)
    kv_heads = int(get("num_key_value_heads") or heads)
    head_dim = int(get("head_dim") or (int(get("hidden_size") or 0) // max(heads, 1)))
    dtype = DTYPE_BYTES.get(str(get("torch_dtype") or get("dtype") or "float16"), 2)
    return 2 * layers * kv_heads * head_dim * dtype


def disk_model(source: str, path: Path) -> DiskModel:
    """The sizes of the model at `path`, known as `source`."""
    return DiskModel(
        source=source,
        weights_bytes=model_weights_bytes(path),
        kv_bytes_per_token=kv_bytes_per_token(path),
        context_length=read_context_length(path),
    )


def models_on_disk(data_dir: Path, loaded: dict[str, Path] | None = None) -> list[DiskModel]:
    """Every model this node could load without downloading: demo, hub snapshots, loaded paths.

    A model whose files cannot be read is left out (and logged): it is not a placement fact.
    """
    found: dict[str, Path] = dict(loaded or {})
    if demo_model_path(data_dir).is_dir():
        found.setdefault(DEMO_NAME, demo_model_path(data_dir))
    for repo in sorted((Path(data_dir) / "hub").glob("models--*")):
        snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
        if snapshots:
            found.setdefault(repo.name.removeprefix("models--").replace("--", "/"), snapshots[-1])
    out = []
    for source, path in sorted(found.items()):
        try:
            out.append(disk_model(source, path))
        except (UnknownModel, LoadFailed, OSError, ValueError) as exc:
            logger.debug("not reporting %s on disk: %s", source, exc)
    return out


def fetch_from_hub(repo_id: str, cache_dir: Path, progress: Progress) -> Path:
    """Download (or find in the cache) a hub model's config, tokenizer and weights."""
    if _hub_offline():
        return _from_cache(repo_id, cache_dir, "offline mode (HF_HUB_OFFLINE) is on")
    try:
        sha, sizes = _list_hub_files(repo_id)
    except UnknownModel:
        raise
    except Exception as e:  # the Hub client raises many types (httpx, its own); all mean "not now"
        return _from_cache(repo_id, cache_dir, _reason(e))
    try:
        path = _download(repo_id, sha, sizes, cache_dir, progress)
    except Exception as e:
        raise UnknownModel(f"could not download {repo_id}: {_reason(e)}") from e
    return validate_model_dir(path)


def _list_hub_files(repo_id: str) -> tuple[str, dict[str, int]]:
    """The commit to download and the size of every file that will be fetched from it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except GatedRepoError as e:
        raise UnknownModel(
            f"could not download {repo_id}: gated; accept its terms, set HF_TOKEN"
        ) from e
    except RepositoryNotFoundError as e:
        raise UnknownModel(f"could not download {repo_id}: no such model on the Hub") from e
    files = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    sizes = {name: size for name, size in files.items() if _wanted(name)}
    if not any(name.endswith(".safetensors") for name in sizes):
        # Older repos ship only PyTorch pickles; vLLM loads them, MLX will refuse at load time.
        sizes |= {n: size for n, size in files.items() if fnmatch(n, "pytorch_model*.bin")}
    if not any(name.endswith((".safetensors", ".bin")) for name in sizes):
        raise UnknownModel(f"could not download {repo_id}: it has no safetensors or .bin weights")
    return str(info.sha), sizes


def _download(
    repo_id: str, sha: str, sizes: dict[str, int], cache_dir: Path, progress: Progress
) -> Path:
    """Run snapshot_download in a thread, reporting the bytes that have landed so far."""
    from huggingface_hub import snapshot_download

    total = sum(sizes.values())
    blobs = _repo_cache(cache_dir, repo_id) / "blobs"
    # Bytes already cached count as done; growth of the blobs folder (partial files included)
    # is what this download adds, whatever transport the Hub client picks.
    start = _dir_bytes(blobs) - _cached_bytes(cache_dir, repo_id, sha, sizes)
    last = -1
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-download") as pool:
        # No revision: the Hub client then records refs/main, which offline look-ups need.
        job = pool.submit(
            snapshot_download, repo_id, cache_dir=cache_dir, allow_patterns=list(sizes)
        )
        while not job.done():
            done = min(total, max(0, _dir_bytes(blobs) - start))
            if done != last:
                progress(_downloading(repo_id, done, total))
                last = done
            wait([job], timeout=POLL_SECONDS)
        path = Path(job.result())
    progress(_downloading(repo_id, total, total))
    return path


def _downloading(repo_id: str, done: int, total: int) -> LoadProgress:
    """A DOWNLOADING progress report."""
    message = f"downloading {repo_id}"
    return LoadProgress(
        stage=LoadStage.DOWNLOADING, message=message, bytes_done=done, bytes_total=total
    )


def _from_cache(repo_id: str, cache_dir: Path, why: str) -> Path:
    """The cached snapshot of `repo_id`, or UnknownModel saying why it could not be fetched."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id,
            cache_dir=cache_dir,
            local_files_only=True,
            allow_patterns=list(HUB_ALLOW),
            ignore_patterns=list(HUB_IGNORE),
        )
    except Exception as e:
        raise UnknownModel(
            f"could not download {repo_id}: {why}, and it is not in {cache_dir}"
        ) from e
    logger.info("using the cached snapshot of %s (%s)", repo_id, why)
    return validate_model_dir(Path(path))


def _cached_bytes(cache_dir: Path, repo_id: str, sha: str, sizes: dict[str, int]) -> int:
    """Bytes of this commit's wanted files already in the cache, counted as done at the start."""
    snapshot = _repo_cache(cache_dir, repo_id) / "snapshots" / sha
    return sum(size for name, size in sizes.items() if (snapshot / name).exists())


def _repo_cache(cache_dir: Path, repo_id: str) -> Path:
    """Where the Hub client caches one model repository."""
    return cache_dir / f"models--{repo_id.replace('/', '--')}"


def _dir_bytes(path: Path) -> int:
    """Total size of the files directly in `path`, partial downloads included; 0 if absent."""
    try:
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    except FileNotFoundError:
        return 0


def _weight_files(path: Path) -> list[Path]:
    """The weights engines would load: safetensors when present, else PyTorch .bin files."""
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return [f for f in files if f.is_file()]


def _read_config(path: Path) -> dict[str, Any]:
    """The parsed config.json of a model directory."""
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError as e:
        raise UnknownModel(f"{path} is not a model directory: it has no config.json") from e
    except (OSError, ValueError) as e:
        raise LoadFailed(f"cannot read {path}/config.json: {e}") from e
    if not isinstance(config, dict):
        raise LoadFailed(f"{path}/config.json is not a JSON object")
    return config


def _wanted(name: str) -> bool:
    """Whether a repo file is part of what resolve downloads."""
    allowed = any(fnmatch(name, p) for p in HUB_ALLOW)
    return allowed and not any(fnmatch(name, p) for p in HUB_IGNORE)


def _looks_like_path(ref: str) -> bool:
    """Whether the user clearly meant a filesystem path rather than a hub id."""
    return ref.startswith(("/", "~", "./", "../")) or ref in (".", "..")


def _hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is on now (the Hub client only reads it at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _reason(error: BaseException) -> str:
    """A one-line reason from a third-party exception."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _ignore(_: LoadProgress) -> None:
    """A progress callback that drops every report."""
