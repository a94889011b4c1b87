"""The `demo` model: a tiny llama-architecture model the project generates itself, offline.

Everything is derived from constants in this module (an embedded corpus, a seeded generator), so
one DEMO_VERSION always produces the same files, and any engine that loads Hugging Face llama
checkpoints (mlx-lm, transformers, vLLM) can serve it. Bump DEMO_VERSION when the bytes change.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

logger = logging.getLogger(__name__)

DEMO_VERSION = "1"
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

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2, in this order
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = """\
The office is quiet in the morning. A few machines sit on the desk, and each of them hums softly
while it waits for work. One of them is the head: it keeps the list of nodes, it knows which model
is loaded where, and it sends every request to the machine that will answer it first.
When a new machine joins, it tells the others that it is there. The head checks the secret that
every member of the cluster shares, and then the new node shows up in the list within seconds.
Nobody has to type an address or edit a file. The machines find each other on the local network.
A model is a large file of numbers. Loading it takes memory, and a small computer has only so much
of it, so the head places each model where it fits. A small model can live on every machine; a
large one may need the box with the graphics card, which has more memory and more speed.
People in the office do not see any of this. They point their tools at one address and ask their
questions. The answer streams back one token at a time, and the ledger writes down how many tokens
were read and how many were written, how long the work took, and what it cost.
What does it cost to own a computer? You pay for it once, and then you pay for the power it draws.
Spread the price over three years and add the electricity, and you know what each hour costs. Divide
by the tokens it served in that hour, and you know what each token costs. Compare that with the
price a cloud provider would charge for the same tokens, and you know whether the desk was a good
idea. On a busy day the answer is usually yes.
The weather was cold last week, and the windows were covered in frost. We made tea in the kitchen
and talked about the garden, the river, the trains that run late in winter, and the bread that a
friend bakes every Sunday. She says that good bread needs time more than skill: flour, water, salt
and a little yeast, a warm corner, and the patience to wait for the dough to rise.
Reading is the other thing that needs time. A good book asks you to sit still, to follow a thought
from the first page to the last, and to remember what the writer said a hundred pages ago. Some
books are short and light; others are long and slow and worth every hour.
The children walked to school along the old road by the river. They counted the boats, they threw
stones into the water, and they argued about which bird was singing in the trees. In the evening
they came home tired and hungry, and there was soup on the stove and music on the radio.
A computer program is a list of small steps. Each step is simple: add two numbers, compare them,
store the result, move to the next step. The power of a program comes from doing millions of these
steps every second, without ever getting bored and without ever making a mistake that it was not
told to make. When a program is wrong, it is because a person wrote it wrong.
Good code is easy to read. Functions are short, names say what things are, and every module does one
job. Tests check that the code does what it should, and they run every time something changes, so
that a mistake is found in minutes rather than in months. Errors are reported clearly, with a
message that tells the reader what went wrong and what to do about it.
The market opens at eight. Farmers bring apples, pears, potatoes, carrots, cheese and eggs, and the
baker brings bread that is still warm. People walk slowly between the stalls, they taste, they ask
questions, and they carry their bags home before the rain comes in the afternoon.
Mountains are old and patient. Rain and wind wear them down a little every year, and rivers carry
the stones to the sea. A walk in the hills shows how much time the land has had: valleys cut by ice,
lakes left behind when it melted, and paths that people have followed for a thousand years.
The library is open every day except Monday. You can borrow six books at a time for three weeks,
and you can ask the librarian for help when you cannot find what you are looking for. There is a
quiet room upstairs with long tables, good light, and a view of the park.
Hello! How can I help you today? I can answer questions, explain ideas, and write short texts.
Thank you for asking. The answer is simple: start small, measure what happens, and change one thing
at a time. If the result is better, keep the change; if it is worse, go back and try something else.
Yes, that is right. No, that is not quite right, but it is close. Let me explain it another way.
First, we read the question. Second, we think about what it means. Third, we write the answer, and
then we check it once more before we send it.
"""


def ensure_demo_model(data_dir: Path) -> Path:
    """Return the demo model's directory under `data_dir`, generating it first if absent."""
    target = Path(data_dir) / "models" / f"{DEMO_NAME}-{DEMO_VERSION}"
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
    write_safetensors(out / "model.safetensors", init_weights())


def train_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer on the embedded corpus; deterministic."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    return tokenizer


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


def init_weights() -> dict[str, np.ndarray]:
    """Seeded random weights with Hugging Face llama tensor names, in float32."""
    rng = np.random.default_rng(SEED)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    weights = {"model.embed_tokens.weight": normal(VOCAB_SIZE, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        weights[p + "input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        weights[p + "self_attn.q_proj.weight"] = normal(HEADS * HEAD_DIM, HIDDEN)
        weights[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        weights[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        weights[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * HEAD_DIM)
        weights[p + "mlp.gate_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        weights[p + "mlp.up_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        weights[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTERMEDIATE)
    weights["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    weights["lm_head.weight"] = normal(VOCAB_SIZE, HIDDEN)
    return weights


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
