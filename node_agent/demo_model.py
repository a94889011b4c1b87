"""The `demo` model: a tiny llama-architecture model the project generates itself, offline.

Everything derives from constants in this module, so one DEMO_VERSION always produces the same
files, on any machine with numpy and tokenizers, and any engine that loads Hugging Face llama
checkpoints (mlx-lm, transformers, vLLM) can serve it. Bump DEMO_VERSION when the bytes change.

How it reads like English without a training run: the tokenizer is a byte-level BPE trained on
the embedded prose and word list; the weights hold a bigram language model of that prose,
fitted in float64 by a few dozen full-batch Adam steps and written into the token embeddings and
the output head. The attention and MLP blocks get small seeded random weights, so every kernel
of a real llama runs but the residual stream is dominated by the bigram path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

DEMO_VERSION = "2"
DEMO_NAME = "demo"

VOCAB_SIZE = 4096
HIDDEN = 256
LAYERS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 768
CONTEXT = 2048
SEED = 20240611

FIT_STEPS = 60
FIT_LEARNING_RATE = 0.05
FIT_RANK = HIDDEN - 2  # two residual dimensions are left for the bias and the norm filler
BIAS_UNSEEN = -30.0  # the logit of tokens the prose never uses: never sampled in practice
# Ending the turn is made rarer than any common sentence opening, so greedy decoding always
# runs to max_tokens (tests and benchmarks want predictable lengths), while sampled answers
# still end, after a few hundred tokens.
END_OF_TURN_WEIGHT = 0.1
BLOCK_STD = 0.02
BLOCK_OUT_STD = 0.001  # keeps each block's write to the residual stream near 1% of it

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2, in this order
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Bigram:
    """A fitted bigram model: logits[next] = contexts_x[ctx] @ outputs_y[next] + bias[next]."""

    contexts: np.ndarray  # token ids seen as a context
    x: np.ndarray  # (len(contexts), FIT_RANK)
    outputs: np.ndarray  # token ids seen as a successor
    y: np.ndarray  # (len(outputs), FIT_RANK)
    bias: np.ndarray  # (len(outputs),)


def demo_model_path(data_dir: Path) -> Path:
    """Where this version of the demo model lives under `data_dir`, generated or not."""
    return Path(data_dir) / "models" / f"{DEMO_NAME}-{DEMO_VERSION}"


def ensure_demo_model(data_dir: Path) -> Path:
    """Return the demo model's directory under `data_dir`, generating it first if absent."""
    target = demo_model_path(data_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: readers never see a half-written model, and a
    # concurrent generator that loses the race simply discards its copy.
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_demo_model(scratch)
        os.rename(scratch, target)
        logger.info("generated the demo model in %s", target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def write_demo_model(out: Path) -> None:
    """Write every file of the demo model into the existing directory `out`."""
    tokenizer = train_tokenizer()
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "config.json", model_config())
    _write_json(out / "generation_config.json", generation_config())
    _write_json(out / "tokenizer_config.json", tokenizer_config())
    _write_json(out / "special_tokens_map.json", special_tokens_map())
    bigram = fit_bigram(bigram_counts(tokenizer))
    write_safetensors(out / "model.safetensors", init_weights(bigram))


def _corpus(name: str) -> str:
    """One of the texts the tokenizer and the bigram are fitted on, shipped beside this module."""
    return (resources.files("node_agent") / f"demo_{name}.txt").read_text(encoding="utf-8")


PROSE, WORDS, CODE = _corpus("prose"), _corpus("words"), _corpus("code")


def paragraphs() -> list[str]:
    """The embedded prose, one unwrapped paragraph per item."""
    return [" ".join(p.split()) for p in PROSE.split("\n\n") if p.strip()]


def train_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer on the embedded texts; deterministic."""
    # Imported here so that importing this module (and models.py) needs no engine's packages.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The word list and the code widen the vocabulary, so token counts of arbitrary prompts
    # come out near those of real tokenizers; only the prose shapes what the model writes.
    texts = [*paragraphs(), " ".join(WORDS.split()), CODE]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def bigram_counts(tokenizer: Tokenizer) -> np.ndarray:
    """Counts of (token, next token) over the prose, each paragraph one assistant answer."""
    newline, end = tokenizer.token_to_id("Ċ"), SPECIAL_TOKENS.index(EOS)
    counts = np.zeros((VOCAB_SIZE, VOCAB_SIZE), np.float64)
    for paragraph in paragraphs():
        # An answer follows the generation prompt's final newline and ends the turn.
        ids = np.array([newline, *tokenizer.encode(paragraph).ids, end])
        np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    counts[:, end] *= END_OF_TURN_WEIGHT
    return counts


def fit_bigram(counts: np.ndarray) -> Bigram:
    """Fit a rank-FIT_RANK softmax bigram model to `counts` by full-batch Adam, in float64."""
    contexts, outputs = np.flatnonzero(counts.sum(1)), np.flatnonzero(counts.sum(0))
    seen = counts[np.ix_(contexts, outputs)]
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((len(contexts), FIT_RANK)) * 0.1
    y = rng.standard_normal((len(outputs), FIT_RANK)) * 0.1
    bias = np.log(seen.sum(0) / seen.sum())  # start from the unigram distribution
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in (x, y, bias)]
    for step in range(1, FIT_STEPS + 1):
        grads = _bigram_gradients(x, y, bias, seen)
        for param, grad, (m, v) in zip((x, y, bias), grads, moments, strict=True):
            _adam_step(param, grad, m, v, step)
    return Bigram(contexts=contexts, x=x, outputs=outputs, y=y, bias=bias)


def _bigram_gradients(
    x: np.ndarray, y: np.ndarray, bias: np.ndarray, counts: np.ndarray
) -> list[np.ndarray]:
    """Gradients of the mean next-token cross-entropy with respect to x, y and bias."""
    logits = x @ y.T + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    delta = (probs * counts.sum(axis=1, keepdims=True) - counts) / counts.sum()
    return [delta @ y, delta.T @ x, delta.sum(axis=0)]


def _adam_step(
    param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, step: int
) -> None:
    """One Adam update of `param` in place (beta1 0.9, beta2 0.999)."""
    m *= 0.9
    m += 0.1 * grad
    v *= 0.999
    v += 0.001 * grad * grad
    m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
    param -= FIT_LEARNING_RATE * m_hat / (np.sqrt(v_hat) + 1e-8)


def model_config() -> dict[str, object]:
    """The Hugging Face `config.json` of the demo model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "pad_token_id": SPECIAL_TOKENS.index(PAD),
        "torch_dtype": "bfloat16",
    }


def generation_config() -> dict[str, object]:
    """The `generation_config.json`: stop at the end of a turn."""
    return {
        "bos_token_id": SPECIAL_TOKENS.index(BOS),
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "pad_token_id": SPECIAL_TOKENS.index(PAD),
    }


def special_tokens_map() -> dict[str, str]:
    """The `special_tokens_map.json`."""
    return {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}


def tokenizer_config() -> dict[str, object]:
    """The `tokenizer_config.json`, with the chat template; no BOS is prepended to prompts."""
    added = {
        str(i): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, tok in enumerate(SPECIAL_TOKENS)
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONTEXT,
        "chat_template": CHAT_TEMPLATE,
    }


def init_weights(bigram: Bigram) -> dict[str, np.ndarray]:
    """All tensors, under Hugging Face llama names: the bigram path plus seeded small blocks."""
    rng = np.random.default_rng(SEED)
    embed, head = _bigram_embeddings(bigram)
    weights = {"model.embed_tokens.weight": embed}
    for i in range(LAYERS):
        weights |= _block_weights(f"model.layers.{i}.", rng)
    weights["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    weights["lm_head.weight"] = head
    return weights


def _bigram_embeddings(bigram: Bigram) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and output head whose product through the final RMSNorm is the bigram's logits."""
    # Each embedding row is [x * scale, 1, filler], the filler chosen so that every row has
    # RMS 1: the final norm then passes it unchanged, and the constant 1 carries the bias.
    scale = np.sqrt(HIDDEN - 2) / np.linalg.norm(bigram.x, axis=1).max()
    embed = np.zeros((VOCAB_SIZE, HIDDEN))
    embed[bigram.contexts, :FIT_RANK] = bigram.x * scale
    embed[:, FIT_RANK] = 1.0
    filler = HIDDEN - 1.0 - (embed[:, :FIT_RANK] ** 2).sum(axis=1)
    embed[:, FIT_RANK + 1] = np.sqrt(np.maximum(filler, 0.0))
    head = np.zeros((VOCAB_SIZE, HIDDEN))
    head[bigram.outputs, :FIT_RANK] = bigram.y / scale
    head[:, FIT_RANK] = BIAS_UNSEEN
    head[bigram.outputs, FIT_RANK] = bigram.bias
    return embed.astype(np.float32), head.astype(np.float32)


def _block_weights(prefix: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One decoder layer's seeded weights; their outputs into the residual stream are small."""

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    ones = np.ones(HIDDEN, np.float32)
    return {
        prefix + "input_layernorm.weight": ones,
        prefix + "post_attention_layernorm.weight": ones,
        prefix + "self_attn.q_proj.weight": normal(BLOCK_STD, HEADS * HEAD_DIM, HIDDEN),
        prefix + "self_attn.k_proj.weight": normal(BLOCK_STD, KV_HEADS * HEAD_DIM, HIDDEN),
        prefix + "self_attn.v_proj.weight": normal(BLOCK_STD, KV_HEADS * HEAD_DIM, HIDDEN),
        prefix + "self_attn.o_proj.weight": normal(BLOCK_OUT_STD, HIDDEN, HEADS * HEAD_DIM),
        prefix + "mlp.gate_proj.weight": normal(BLOCK_STD, INTERMEDIATE, HIDDEN),
        prefix + "mlp.up_proj.weight": normal(BLOCK_STD, INTERMEDIATE, HIDDEN),
        prefix + "mlp.down_proj.weight": normal(BLOCK_OUT_STD, HIDDEN, INTERMEDIATE),
    }


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write `tensors` as bfloat16 safetensors, byte for byte the same for the same input."""
    # Written by hand because numpy has no bfloat16 and the format is a JSON header plus bytes.
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        blob = _bfloat16_bytes(tensors[name])
        span = [offset, offset + len(blob)]
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": span}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format asks for an 8-byte aligned data section
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        f.writelines(blobs)


def _bfloat16_bytes(array: np.ndarray) -> bytes:
    """Round float32 to bfloat16 (to nearest, ties to even) and return little-endian bytes."""
    bits = np.ascontiguousarray(array, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2").tobytes()


def _write_json(path: Path, value: object) -> None:
    """Write `value` as stable, indented JSON."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
