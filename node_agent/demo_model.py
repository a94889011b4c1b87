"""The `demo` model: a tiny llama-architecture model the project generates itself, offline.

Everything derives from constants in this module, so one DEMO_VERSION always produces the same
files, on any machine with numpy and tokenizers, and any engine that loads Hugging Face llama
checkpoints (mlx-lm, transformers, vLLM) can serve it. Bump DEMO_VERSION when the bytes change.

How it reads like English without a training run: the tokenizer is a byte-level BPE trained on
the embedded prose and word list; the weights hold a bigram language model of that prose,
fitted in float64 by a few dozen full-batch Adam steps and written into the token embeddings and
the output head. The attention and MLP blocks get small seeded random weights, so every kernel
of a real llama runs but the residual stream is dominated by the bigram path.

It talks like an agent model: a Qwen3-style chat template renders tools, tool calls, tool results
and thinking, and the tool and think tags are tokens of their own. Every turn it was fitted on is
a short thought, `</think>`, then an answer; one hand-set circuit in layer 0 knows whether a
thought is open (attention finds the think tags, the MLP thresholds), so thoughts end with
`</think>` and never the turn, and answers end the turn and never with `</think>`.
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

DEMO_VERSION = "3"
DEMO_NAME = "demo"

VOCAB_SIZE = 4096
HIDDEN = 256
LAYERS = 4
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 768
CONTEXT = 32768
ROPE_THETA = 1_000_000.0  # Qwen2.5's base for 32k positions: its slowest pair barely turns in 32k
SEED = 20240611

# The residual stream: the bigram's dimensions, then six with one job each. BIAS is 1 in every
# embedding and carries the bigram's bias; FILL gives every embedding RMS 1; TAG and SIGN mark the
# think tags (1 on both; +1 on <think>, -1 on </think>); OPEN and ANSWER are written by layer 0.
FIT_RANK = HIDDEN - 6
BIAS, FILL, TAG, SIGN, OPEN, ANSWER = range(FIT_RANK, HIDDEN)

FIT_STEPS = 60
FIT_LEARNING_RATE = 0.1
BIAS_UNSEEN = -30.0  # the logit of tokens the prose never uses: never sampled in practice
# After a sentence end, ending the turn gets this share of the most common sentence opening:
# greedy decoding then never ends it (tests and benchmarks want predictable lengths), while a
# sampled answer ends after a sentence or a few. Openings are sharpened to leave it room.
END_OF_TURN_SHARE = 0.7
OPENING_SHARPNESS = 1.5
END_OF_THOUGHT_SHARE = 1.5  # of all openings: a sampled thought is a sentence or two
# Right after <think>, closing it gets this share of the most common thought opening: greedy
# decoding thinks nothing (its answer starts at once), a sample almost always thinks first.
EMPTY_THOUGHT_SHARE = 1.5
BLOCK_STD = 0.02
BLOCK_OUT_STD = 0.001  # keeps each block's write to the residual stream near 1% of it
# Layer 0's circuit. Attention puts TAG_SCORE on each think tag (e^24 outweighs 32k other
# positions) and averages SIGN: 1/(2k+1) while a thought is open after k closed ones, 0 when
# none is. The MLP turns that into ANSWER = (silu(14 - 270 s) - silu(6 - 270 s)) / 8: 1, or 0
# while thinking. The head subtracts SUPPRESS from </think> when answering, from the end of
# turn when thinking.
TAG_SCORE = 24.0
OPEN_GAIN = 270.0
ANSWER_RAMP = (14.0, 6.0)
SUPPRESS = 10.0

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2, in this order
THINK, END_THINK = "<think>", "</think>"
TOOL_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
AGENT_TOKENS = (*TOOL_TAGS, THINK, END_THINK)  # added, not special: they show, as in Qwen's vocab
SENTENCE_ENDS = (".", "?", "!")


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
    _write_json(out / "tokenizer_config.json", tokenizer_config(tokenizer))
    _write_json(out / "special_tokens_map.json", special_tokens_map())
    ids = TokenIds.of(tokenizer)
    bigram = fit_bigram(bigram_counts(tokenizer, ids))
    write_safetensors(out / "model.safetensors", init_weights(bigram, ids))


def _data(name: str) -> str:
    """One of the data files shipped beside this module."""
    return (resources.files("node_agent") / name).read_text(encoding="utf-8")


PROSE, WORDS, CODE, THOUGHTS = (
    _data(f"demo_{name}.txt") for name in ("prose", "words", "code", "thoughts")
)
CHAT_TEMPLATE = _data("demo_chat_template.jinja").rstrip("\n")


def paragraphs(text: str = PROSE) -> list[str]:
    """The paragraphs of an embedded text (the prose by default), each unwrapped."""
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


@dataclass(frozen=True)
class TokenIds:
    """The ids that shape a turn: its newlines, its ends, the think tags, the sentence ends."""

    newline: int
    blank_line: int
    eos: int
    think: int
    end_think: int
    sentence_ends: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> TokenIds:
        """Look the ids up in `tokenizer`."""

        def find(token: str) -> int:
            found = tokenizer.token_to_id(token)
            if found is None:
                raise LookupError(f"the demo tokenizer has no {token!r}")
            return found

        return cls(
            newline=find("Ċ"),
            blank_line=find("ĊĊ"),
            eos=find(EOS),
            think=find(THINK),
            end_think=find(END_THINK),
            sentence_ends=tuple(find(t) for t in SENTENCE_ENDS),
        )


def train_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer on the embedded texts; deterministic."""
    # Imported here so that importing this module (and models.py) needs no engine's packages.
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(AGENT_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The word list and the code widen the vocabulary, so token counts of arbitrary prompts
    # come out near those of real tokenizers; only the prose and thoughts shape what it writes.
    texts = [*paragraphs(), *paragraphs(THOUGHTS), " ".join(WORDS.split()), CODE]
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in AGENT_TOKENS])
    return tokenizer


def turns(tokenizer: Tokenizer, ids: TokenIds) -> list[list[int]]:
    """The fitted turns, as the template leaves them after `<think>`: thought, answer, end."""
    thoughts = paragraphs(THOUGHTS)
    out = []
    for i, answer in enumerate(paragraphs()):
        thought = tokenizer.encode(thoughts[i % len(thoughts)]).ids
        answer_ids = tokenizer.encode(answer).ids
        out.append([ids.newline, *thought, ids.end_think, ids.blank_line, *answer_ids, ids.eos])
    return out


def bigram_counts(tokenizer: Tokenizer, ids: TokenIds) -> np.ndarray:
    """Counts of (token, next token) over the fitted turns, sentence ends reweighted."""
    counts = np.zeros((VOCAB_SIZE, VOCAB_SIZE), np.float64)
    for turn in turns(tokenizer, ids):
        np.add.at(counts, (turn[:-1], turn[1:]), 1.0)
    counts[ids.newline, ids.end_think] = EMPTY_THOUGHT_SHARE * counts[ids.newline].max()
    for end in ids.sentence_ends:
        row = counts[end]
        row[[ids.eos, ids.end_think]] = 0.0
        row **= OPENING_SHARPNESS
        row[ids.eos], row[ids.end_think] = (
            END_OF_TURN_SHARE * row.max(),
            END_OF_THOUGHT_SHARE * row.sum(),
        )
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
        "rope_theta": ROPE_THETA,
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


def tokenizer_config(tokenizer: Tokenizer) -> dict[str, object]:
    """The `tokenizer_config.json`, with the chat template; no BOS is prepended to prompts."""
    plain = dict.fromkeys(("lstrip", "normalized", "rstrip", "single_word"), False)
    added = {
        str(i): {"content": token.content, "special": token.special, **plain}
        for i, token in sorted(tokenizer.get_added_tokens_decoder().items())
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


def init_weights(bigram: Bigram, ids: TokenIds) -> dict[str, np.ndarray]:
    """All tensors, under Hugging Face llama names: the bigram path plus seeded small blocks."""
    rng = np.random.default_rng(SEED)
    embed, head = _bigram_embeddings(bigram, ids)
    weights = {"model.embed_tokens.weight": embed}
    for i in range(LAYERS):
        weights |= _block_weights(f"model.layers.{i}.", rng)
    _wire_thinking(weights)
    weights["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    weights["lm_head.weight"] = head
    return weights


def _bigram_embeddings(bigram: Bigram, ids: TokenIds) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and output head whose product through the final RMSNorm is the bigram's logits."""
    # Each embedding row is [x * scale, 1, filler, tag, sign, 0, 0], the filler chosen so that
    # every row has RMS 1: the final norm then passes it unchanged, and the 1 carries the bias.
    scale = np.sqrt(HIDDEN - 3) / np.linalg.norm(bigram.x, axis=1).max()
    embed = np.zeros((VOCAB_SIZE, HIDDEN))
    embed[bigram.contexts, :FIT_RANK] = bigram.x * scale
    embed[:, BIAS] = 1.0
    embed[[ids.think, ids.end_think], TAG] = 1.0
    embed[[ids.think, ids.end_think], SIGN] = [1.0, -1.0]
    embed[:, FILL] = np.sqrt(np.maximum(HIDDEN - (embed**2).sum(axis=1), 0.0))
    head = np.zeros((VOCAB_SIZE, HIDDEN))
    head[bigram.outputs, :FIT_RANK] = bigram.y / scale
    head[:, BIAS] = BIAS_UNSEEN
    head[bigram.outputs, BIAS] = bigram.bias
    head[ids.end_think, ANSWER] = -SUPPRESS
    head[ids.eos, BIAS] -= SUPPRESS
    head[ids.eos, ANSWER] = SUPPRESS
    return embed.astype(np.float32), head.astype(np.float32)


def _wire_thinking(weights: dict[str, np.ndarray]) -> None:
    """Set layer 0's head 0 and two MLP units to write OPEN and ANSWER (see TAG_SCORE)."""
    for name, w in weights.items():  # only the circuit writes OPEN and ANSWER
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            w[[OPEN, ANSWER]] = 0.0
    layer = "model.layers.0."
    q, k, v, o = (weights[f"{layer}self_attn.{n}_proj.weight"] for n in "qkvo")
    head_rows = slice(0, HEAD_DIM)  # query head 0 and the key-value head it reads
    slowest = HEAD_DIM // 2 - 1  # the rotary pair that turns slowest (rotate-half layout)
    gain = np.sqrt(TAG_SCORE * np.sqrt(HEAD_DIM))
    q[head_rows], k[head_rows], v[head_rows], o[:, head_rows] = 0.0, 0.0, 0.0, 0.0
    q[slowest, BIAS], k[slowest, TAG], v[0, SIGN], o[OPEN, 0] = gain, gain, 1.0, 1.0
    gate, up, down = (weights[f"{layer}mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
    gate[:2], up[:2], down[:, :2] = 0.0, 0.0, 0.0
    gate[:2, OPEN] = -OPEN_GAIN
    gate[:2, BIAS] = ANSWER_RAMP
    up[:2, BIAS] = [1.0, -1.0]
    down[ANSWER, :2] = 1.0 / (ANSWER_RAMP[0] - ANSWER_RAMP[1])


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
