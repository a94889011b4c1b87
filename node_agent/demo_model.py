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


# The texts below are data, kept last so the code reads first. Paragraphs are separated by blank
# lines; line breaks inside a paragraph are only wrapping.

CODE = '''\
def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


for i in range(10):
    print(i, fibonacci(i))
'''

PROSE = """\
Hello! How can I help you today? I can answer questions, explain ideas, and write short texts.
Ask me anything, and I will do my best to give you a clear and useful answer.

Thank you for asking. The answer is simple: start small, measure what happens, and change one
thing at a time. If the result is better, keep the change; if it is worse, go back and try
something else.

Yes, that is right. No, that is not quite right, but it is close. Let me explain it another way,
with a small example that shows the idea step by step.

First, we read the question. Second, we think about what it means. Third, we write the answer,
and then we check it once more before we send it.

Sure. Here is a short summary. The main point is that the system is simple at the center and
careful at the edges, so that most of the work is easy to understand and easy to test.

I am a small language model. I was made to show how the cluster works, so my answers are short
and sometimes strange. A larger model would give you better answers, but I am fast, I am free,
and I run on any computer.

The office is quiet in the morning. A few machines sit on the desk, and each of them hums softly
while it waits for work. One of them is the head: it keeps the list of nodes, it knows which
model is loaded where, and it sends every request to the machine that will answer it first.

When a new machine joins, it tells the others that it is there. The head checks the secret that
every member of the cluster shares, and then the new node shows up in the list within seconds.
Nobody has to type an address or edit a file. The machines find each other on the local network.

A model is a large file of numbers. Loading it takes memory, and a small computer has only so
much of it, so the head places each model where it fits. A small model can live on every
machine; a large one may need the box with the graphics card, which has more memory and more
speed.

People in the office do not see any of this. They point their tools at one address and ask their
questions. The answer streams back one token at a time, and the ledger writes down how many
tokens were read and how many were written, how long the work took, and what it cost.

What does it cost to own a computer? You pay for it once, and then you pay for the power it
draws. Spread the price over three years and add the electricity, and you know what each hour
costs. Divide by the tokens it served in that hour, and you know what each token costs.

Compare that with the price a cloud provider would charge for the same tokens, and you know
whether the desk was a good idea. On a busy day the answer is usually yes. On a quiet day the
machines sleep, and they draw very little power.

The weather was cold last week, and the windows were covered in frost. We made tea in the
kitchen and talked about the garden, the river, the trains that run late in winter, and the
bread that a friend bakes every Sunday.

She says that good bread needs time more than skill: flour, water, salt and a little yeast, a
warm corner, and the patience to wait for the dough to rise. Bake it in a hot oven until the
crust is dark and the loaf sounds hollow when you knock on it.

Reading is the other thing that needs time. A good book asks you to sit still, to follow a
thought from the first page to the last, and to remember what the writer said a hundred pages
ago. Some books are short and light; others are long and slow and worth every hour.

The children walked to school along the old road by the river. They counted the boats, they
threw stones into the water, and they argued about which bird was singing in the trees. In the
evening they came home tired and hungry, and there was soup on the stove and music on the radio.

A computer program is a list of small steps. Each step is simple: add two numbers, compare them,
store the result, move to the next step. The power of a program comes from doing millions of
these steps every second, without ever getting bored.

When a program is wrong, it is because a person wrote it wrong. Good code is easy to read.
Functions are short, names say what things are, and every module does one job.

Tests check that the code does what it should, and they run every time something changes, so
that a mistake is found in minutes rather than in months. Errors are reported clearly, with a
message that tells the reader what went wrong and what to do about it.

The market opens at eight. Farmers bring apples, pears, potatoes, carrots, cheese and eggs, and
the baker brings bread that is still warm. People walk slowly between the stalls, they taste,
they ask questions, and they carry their bags home before the rain comes in the afternoon.

Mountains are old and patient. Rain and wind wear them down a little every year, and rivers
carry the stones to the sea. A walk in the hills shows how much time the land has had: valleys
cut by ice, lakes left behind when it melted, and paths that people have followed for a thousand
years.

The library is open every day except Monday. You can borrow six books at a time for three weeks,
and you can ask the librarian for help when you cannot find what you are looking for. There is a
quiet room upstairs with long tables, good light, and a view of the park.

The sun is a star, and the earth moves around it once a year. The moon moves around the earth
about once a month, and its light is the light of the sun, reflected from its grey and dusty
surface. On a clear night far from the city you can see thousands of stars, and the pale band of
the galaxy across the sky.

Water boils at one hundred degrees at sea level, and it freezes at zero. High in the mountains
the air is thinner, so water boils at a lower temperature, and it takes longer to cook an egg or
a pot of rice.

Plants make their food from light, water and air. The green leaves catch the light of the sun,
the roots drink water from the soil, and the plant turns them into sugar and wood. Animals eat
the plants, and other animals eat them, and in the end everything returns to the soil.

The human heart beats about seventy times a minute. It pumps blood through the body, carrying
air from the lungs and food from the stomach to every cell. Sleep, good food, clean water and a
daily walk keep it strong for many years.

A city is a machine for living together. Streets carry people and goods, pipes carry water in
and out, wires carry power and messages, and trains carry workers from the edges to the center
in the morning and back again at night.

In the old town the streets are narrow and the houses lean against each other. There is a small
square with a fountain, a church with a clock that is always five minutes late, and a cafe where
the same old men play cards every afternoon.

The first computers filled whole rooms. They were built from tubes and wires, they broke down
every few hours, and they could do less than a cheap watch can do today. Then came the
transistor, then the chip, and every few years the machines became smaller, faster and cheaper.

Today a computer the size of a book can hold a model that writes text, answers questions and
translates between languages. It does this by predicting the next word, again and again, using
patterns it learned from a great deal of text.

A language model reads text as tokens. A token is a short piece of a word: sometimes a whole
word, sometimes a few letters, sometimes a single character. Common words are one token; rare
words are split into several. Counting tokens is how the cost of a request is measured.

The prompt is what you send, and the completion is what comes back. Both are counted in tokens.
A long conversation has a long prompt, because every earlier message is sent again, which is why
the cluster keeps a cache of the prompts it has already read.

To make a cup of tea, boil fresh water, warm the pot, and add one spoon of tea for each cup.
Pour the water over the leaves, wait three or four minutes, and pour the tea through a strainer.
Some people add milk, some add lemon, and some add nothing at all.

To make a simple soup, cut an onion, two carrots and a few potatoes. Cook the onion in a little
oil until it is soft, add the rest with water and salt, and let it simmer for half an hour.
Serve it hot with fresh bread.

The garden needs work in the spring. The soil must be turned, the weeds pulled, and the seeds
planted in straight rows. Then comes the waiting, the watering, and the daily check for snails,
until the first green leaves appear.

In summer the days are long and warm. We eat outside, we swim in the lake, and we stay up late
to watch the sky turn from blue to orange to deep purple. In autumn the leaves turn red and
gold, and the air smells of smoke and apples.

A good meeting is short. It has a clear question, the right people, and a decision at the end. A
bad meeting has no question, too many people, and ends with a plan to have another meeting next
week.

Writing well is mostly rewriting. The first draft says what you think; the second says it
clearly; the third cuts every word that does not help the reader. Short sentences are easier to
read than long ones, and plain words are better than clever ones.

Learning a new language takes years, but the first steps are quick. Learn the words for hello,
thank you and please, the numbers from one to ten, and how to ask for the way to the station.
People are kind to a visitor who tries.

The train leaves at seven from platform three. It stops at every town along the coast, and the
journey takes about four hours. Bring a book, a sandwich and a warm coat, because the heating
does not always work.

My favorite season is autumn, because the light is soft and the mornings are cool. I like to
walk in the forest when the leaves are falling, and then come home to a warm room, a cup of tea,
and a good book.

Numbers are everywhere. Two plus two is four, ten times ten is one hundred, and half of one
hundred is fifty. A year has twelve months, a week has seven days, a day has twenty four hours,
and an hour has sixty minutes.

The colors of the rainbow are red, orange, yellow, green, blue and violet. They appear when the
sun shines through rain, because each drop of water bends the light and splits it into its
colors.

Music is sound arranged in time. A song has a melody that you can sing, a rhythm that you can
clap, and harmony that makes it sound full. Some music is made to dance to, some to sit and
listen to, and some to sing together.

Dogs are loyal and playful, and they like to walk every day. Cats are quiet and independent, and
they like to sleep in the sun. Birds sing in the morning, and fish swim slowly in the cool water
of the pond.

The sea is calm today. Small boats go out in the early morning and come back at noon with fish,
and the gulls follow them, crying and circling over the harbor. In the evening the lights of the
town shine on the water.

History is the story of people. It tells us how they lived, what they believed, what they built
and what they destroyed. We study it not to repeat the past, but to understand how we came to be
where we are.

A careful engineer asks three questions before changing anything: what will this fix, what could
it break, and how will we know? Then she makes the smallest change that answers the first
question, and she writes a test for the third.

When the network is slow, check the cable first, then the switch, then the settings. Most
problems are simple, and the simple checks are quick. Write down what you tried, so that the
next person does not have to try it again.

Memory is the space a computer uses to hold what it is working on. A model must fit in memory to
run quickly, so the cluster checks how much memory each machine has free before it loads a model
there.

Speed is measured in tokens per second. A small model on a fast machine can write hundreds of
tokens per second; a large model on a small machine may write only a few. The router sends each
request to the node that will finish it first.

If a node fails before the first token, the request moves to the next node, and the person who
asked never notices. If a node is busy, new requests go elsewhere until it catches up. If a node
leaves, its models are placed again on the nodes that remain.

The ledger is honest. It records every request: who asked, which model answered, how many tokens
went in and out, and how long it took. From these records the cluster can say what each machine
has cost and what it has saved.

Good morning. The coffee is ready, the machines are warm, and the first questions are already
arriving. It is going to be a busy day.

Good night. The office is dark, the last request has finished, and the machines are resting.
Tomorrow they will wake up and start again.
"""

WORDS = """\
a about above accept account across act action active activity actually add address admit adult
affect after afternoon again against age agency agent ago agree agreement ahead air all allow
almost alone along already also although always among amount analysis and animal another answer
any anyone anything appear apply approach area argue arm around arrive art article artist as ask
assume at attack attention attorney audience author authority available avoid away baby back bad
bag ball bank bar base be beat beautiful because become bed before begin behavior behind believe
benefit best better between beyond big bill billion bit black blood blue board body book born
both box boy break bring brother budget build building business but buy by call camera campaign
can cancer candidate capital car card care career carry case catch cause cell center central
century certain certainly chair challenge chance change character charge check child choice
choose church citizen city civil claim class clear clearly close coach cold collection college
color come commercial common community company compare computer concern condition conference
congress consider consumer contain continue control cost could country couple course court cover
create crime cultural culture cup current customer cut dark data daughter day dead deal death
debate decade decide decision deep defense degree democrat democratic describe design despite
detail determine develop development die difference different difficult dinner direction
director discover discuss discussion disease do doctor dog door down draw dream drive drop drug
during each early east easy eat economic economy edge education effect effort eight either
election else employee end energy enjoy enough enter entire environment environmental especially
establish even evening event ever every everybody everyone everything evidence exactly example
executive exist expect experience expert explain eye face fact factor fail fall family far fast
father fear federal feel feeling few field fight figure fill film final finally financial find
fine finger finish fire firm first fish five floor fly focus follow food foot for force foreign
forget form former forward four free friend from front full fund future game garden gas general
generation get girl give glass go goal good government great green ground group grow growth
guess gun guy hair half hand hang happen happy hard have he head health hear heart heat heavy
help her here herself high him himself his history hit hold home hope hospital hot hotel hour
house how however huge human hundred husband idea identify if image imagine impact important
improve in include including increase indeed indicate individual industry information inside
instead institution interest interesting international interview into investment involve issue
it item its itself job join just keep key kid kill kind kitchen know knowledge land language
large last late later laugh law lawyer lay lead leader learn least leave left leg legal less let
letter level lie life light like likely line list listen little live local long look lose loss
lot love low machine magazine main maintain major majority make man manage management manager
many market marriage material matter may maybe me mean measure media medical meet meeting member
memory mention message method middle might military million mind minute miss mission model
modern moment money month more morning most mother mouth move movement movie much music must my
myself name nation national natural nature near nearly necessary need network never new news
newspaper next nice night no none nor north not note nothing notice now number occur of off
offer office officer official often oh oil ok old on once one only onto open operation
opportunity option or order organization other others our out outside over own owner page pain
painting paper parent part participant particular particularly partner party pass past patient
pattern pay peace people per perform performance perhaps period person personal phone physical
pick picture piece place plan plant play player point police policy political politics poor
popular population position positive possible power practice prepare present president pressure
pretty prevent price private probably problem process produce product production professional
professor program project property protect prove provide public pull purpose push put quality
question quickly quite race radio raise range rate rather reach read ready real reality realize
really reason receive recent recently recognize record red reduce reflect region relate
relationship religious remain remember remove report represent require research resource respond
response responsibility rest result return reveal rich right rise risk road rock role room rule
run safe same save say scene school science scientist score sea season seat second section
security see seek seem sell send senior sense series serious serve service set seven several
shake share she shoot short shot should shoulder show side sign significant similar simple
simply since sing single sister sit site situation six size skill skin small smile so social
society soldier some somebody someone something sometimes son song soon sort sound source south
southern space speak special specific speech spend sport spring staff stage stand standard star
start state statement station stay step still stock stop store story strategy street strong
structure student study stuff style subject success successful such suddenly suffer suggest
summer support sure surface system table take talk task tax teach teacher team technology
television tell ten tend term test than thank that the their them themselves then theory there
these they thing think third this those though thought thousand threat three through throughout
throw thus time to today together tonight too top total tough toward town trade traditional
training travel treat treatment tree trial trip trouble true truth try turn two type under
understand unit until up upon us use usually value various very victim view violence visit voice
vote wait walk wall want war watch water way we weapon wear week weight well west western what
whatever when where whether which while white who whole whom whose why wide wife will win wind
window wish with within without woman wonder word work worker world worry would write writer
wrong yard yeah year yes yet you young your yourself accurate algorithm allocate application
architecture assistant async batch benchmark binary browser buffer bug byte cache capacity chat
client cloud cluster code compile compute config configuration connect connection console
container controller core cpu database debug default deploy deployment device disk docker
download driver email encode endpoint engine error exception execute feature file filter folder
format framework function gateway gpu graph hardware hash host html http index input install
instance integer interface internet kernel keyboard latency layer library linux load local log
login loop mac memory metric mobile module monitor mouse node online output package parameter
parse password path pipeline platform plugin port process processor protocol python query queue
random register release remote request response router runtime schedule screen script search
secret server session setting shell software sort speed stack storage stream string support
switch sync table template terminal thread throughput timeout token tool traffic training update
upload user username variable vector version video virtual web website window wireless apple
banana bread butter carrot cheese chicken chocolate coffee cookie corn cream egg flour fruit
grape honey lemon lettuce meat milk noodle onion orange pasta peach pear pepper pie pizza potato
rice salad salt sandwich sauce soup spice strawberry sugar tea tomato vegetable wine yogurt
breakfast lunch dinner dessert kitchen oven plate spoon fork knife bowl bird cat cow deer duck
elephant fox frog goat horse insect lion monkey mouse owl pig rabbit sheep snake spider tiger
whale wolf bee butterfly cloud fog frost ice lightning rain rainbow snow storm sunshine thunder
wind weather temperature forecast climate island forest hill lake mountain ocean river valley
desert beach coast field meadow blue brown gray green orange pink purple red white yellow black
golden silver monday tuesday wednesday thursday friday saturday sunday january february march
april may june july august september october november december spring summer autumn winter arm
back ear eye face finger foot hair hand head heart knee leg lip mouth neck nose shoulder skin
stomach throat tooth bicycle boat bus car plane ship train truck airport bridge highway station
ticket journey passenger beautiful bright busy careful cheap clean clever cold comfortable
dangerous dark delicious dirty dry easy empty expensive famous fast friendly funny gentle heavy
honest hungry kind large lazy loud lucky modern narrow noisy polite quiet rich rough sad safe
sharp short shy slow smooth soft strange strong sweet tall thick thin tired ugly warm weak wet
wide wise young always almost certainly clearly easily exactly finally fortunately gently
happily immediately instead nearly never often perhaps quickly rarely really recently seldom
simply slowly sometimes soon suddenly usually explained explaining explains answered answering
answers asked asking asks helped helping helps loaded loading loads served serving serves
started starting starts walked walking walks worked working works wrote writing writes thinking
thought learned learning moved moving measured measuring counted counting running children women
men people families cities countries stories questions answers machines computers models tokens
requests nodes clusters engineers teachers students friends books days years hours minutes
seconds
"""
