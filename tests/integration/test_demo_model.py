"""The generated demo model: deterministic, loadable by mlx-lm, transformers and vLLM's parsers,
and an agent model on the engine: it thinks, then answers, then ends its turn."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from node_agent import demo_model
from node_agent.demo_model import DEMO_VERSION, EOS, ensure_demo_model
from tests.integration.engines import require_vllm

MESSAGES = [{"role": "user", "content": "Hello, how are you?"}]


def _hashes(model_dir: Path) -> dict[str, str]:
    """File name -> sha256 of every file in the model directory."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in model_dir.iterdir()}


def test_generation_is_deterministic(tmp_path: Path, demo_model_dir: Path) -> None:
    again = ensure_demo_model(tmp_path)
    assert again.name == demo_model_dir.name == f"demo-{DEMO_VERSION}"
    assert _hashes(again) == _hashes(demo_model_dir)


def test_an_existing_model_is_reused(demo_model_dir: Path) -> None:
    stamp = (demo_model_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(demo_model_dir.parent.parent) == demo_model_dir
    assert (demo_model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_concurrent_generation_leaves_one_complete_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_write(out: Path) -> None:
        (out / "config.json").write_text("{}")
        time.sleep(0.2)  # long enough for every caller to be mid-generation at once
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(demo_model, "write_demo_model", slow_write)
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(ensure_demo_model, [tmp_path] * 3))
    assert len(set(paths)) == 1
    assert [p.name for p in (tmp_path / "models").iterdir()] == [paths[0].name]
    assert set(_hashes(paths[0])) == {"config.json", "model.safetensors"}


def test_config_is_a_hugging_face_llama(demo_model_dir: Path) -> None:
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] in (64, 128)
    weights = (demo_model_dir / "model.safetensors").stat().st_size
    assert 1_000_000 < weights < 32_000_000


@pytest.fixture(scope="module")
def mlx_demo(demo_model_dir: Path) -> tuple[Any, Any, list[int]]:
    """The demo model loaded by mlx-lm, its tokenizer, and a rendered chat prompt."""
    mlx_lm = pytest.importorskip("mlx_lm")
    model, tokenizer = mlx_lm.load(str(demo_model_dir))
    return model, tokenizer, tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)


def _stream(mlx_demo: tuple[Any, Any, list[int]], **kwargs: Any) -> list[Any]:
    """Every step of one mlx-lm generation for the chat prompt."""
    import mlx_lm

    model, tokenizer, prompt = mlx_demo
    return list(mlx_lm.stream_generate(model, tokenizer, prompt, **kwargs))


def test_mlx_lm_loads_and_generates(mlx_demo: tuple[Any, Any, list[int]]) -> None:
    steps = _stream(mlx_demo, max_tokens=8)
    assert 1 <= len(steps) <= 8
    assert steps[-1].generation_tokens == len(steps)


def test_greedy_output_is_english_and_runs_to_max_tokens(
    mlx_demo: tuple[Any, Any, list[int]],
) -> None:
    """Greedy decoding never ends the turn, so callers can rely on max_tokens being reached."""
    steps = _stream(mlx_demo, max_tokens=48)
    assert (len(steps), steps[-1].finish_reason) == (48, "length")
    text = "".join(s.text for s in steps)
    assert text.startswith("</think>\n\n")  # greedy thinks nothing: its answer starts at once
    words = text.removeprefix("</think>").split()
    texts = [*demo_model.paragraphs(), *demo_model.paragraphs(demo_model.THOUGHTS)]
    prose_words = set(" ".join(texts).split())
    assert sum(w in prose_words for w in words) >= 0.9 * len(words)
    assert "</think>" not in text[len("</think>") :]


def _sampled(model: Any, tokenizer: Any, n: int, **template: Any) -> list[tuple[str, str]]:
    """n sampled answers (temperature 1) to one chat, each as (text, finish_reason)."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(0)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, **template)
    out = []
    for _ in range(n):
        steps = list(
            mlx_lm.stream_generate(
                model, tokenizer, prompt, max_tokens=256, sampler=make_sampler(temp=1.0)
            )
        )
        out.append(("".join(s.text for s in steps), steps[-1].finish_reason))
    return out


def test_sampled_answers_end_the_turn(mlx_demo: tuple[Any, Any, list[int]]) -> None:
    model, tokenizer, _ = mlx_demo
    answers = _sampled(model, tokenizer, 6, enable_thinking=False)
    assert sum(reason == "stop" for _, reason in answers) >= 4
    assert not any("</think>" in text for text, _ in answers)


def test_a_sampled_thought_closes_before_the_answer(mlx_demo: tuple[Any, Any, list[int]]) -> None:
    model, tokenizer, _ = mlx_demo
    answers = _sampled(model, tokenizer, 6)
    ended = [text for text, reason in answers if reason == "stop"]
    assert len(ended) >= 4
    assert all(text.count("</think>") == 1 for text in ended)  # the turn never ends in a thought
    thought = [text.split("</think>")[0] for text in ended]
    assert sum(bool(t.strip()) for t in thought) >= 3


def _next_token(mlx_demo: tuple[Any, Any, list[int]], ids: list[int]) -> dict[str, float]:
    """P(next token) after `ids`, for the end of turn and the end of a thought."""
    import mlx_lm

    model, tokenizer, _ = mlx_demo
    step = next(mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=1))
    logprobs = step.logprobs.tolist()
    return {t: math.exp(logprobs[tokenizer.convert_tokens_to_ids(t)]) for t in (EOS, "</think>")}


@pytest.mark.parametrize("earlier", [0, 3])
def test_thinking_holds_until_its_tag_after_earlier_thoughts(
    mlx_demo: tuple[Any, Any, list[int]], earlier: int
) -> None:
    """Layer 0 knows a thought is open, however many tool steps the turn already thought through."""
    _, tokenizer, _ = mlx_demo
    step = [
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "I will look it up.",
            "tool_calls": [{"function": {"name": "look_up", "arguments": {"q": "weather"}}}],
        },
        {"role": "tool", "content": "Sunny."},
    ]
    messages = MESSAGES + step * earlier
    sentence = tokenizer.encode(" The office is quiet.", add_special_tokens=False)
    for thinking in (True, False):
        prompt = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, enable_thinking=thinking
        )
        p = _next_token(mlx_demo, prompt + sentence)
        if thinking:
            assert p["</think>"] > 0.4 and p[EOS] < 1e-3
        else:
            assert p[EOS] > 0.1 and p["</think>"] < 1e-3


def test_mlx_lm_finds_tool_calls_and_thinking(mlx_demo: tuple[Any, Any, list[int]]) -> None:
    _, tokenizer, _ = mlx_demo
    assert tokenizer.has_tool_calling and tokenizer.tool_parser.__module__.endswith("json_tools")
    assert (tokenizer.tool_call_start, tokenizer.tool_call_end) == ("<tool_call>", "</tool_call>")
    assert tokenizer.has_thinking and (tokenizer.think_start, tokenizer.think_end) == (
        "<think>",
        "</think>",
    )
    assert tokenizer.think_end_id == tokenizer.convert_tokens_to_ids("</think>")


def test_vllm_parsers_find_the_tags(demo_model_dir: Path) -> None:
    """vLLM's hermes tool parser and qwen3 reasoning parser look the tags up in the vocabulary."""
    require_vllm()
    transformers = pytest.importorskip("transformers")
    from vllm.reasoning.qwen3_engine_reasoning_parser import Qwen3ParserReasoningAdapter
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    tokenizer = transformers.AutoTokenizer.from_pretrained(demo_model_dir)
    hermes = Hermes2ProToolParser(tokenizer)
    assert {hermes.tool_call_start_token, hermes.tool_call_end_token} <= set(hermes.vocab)
    reasoning = Qwen3ParserReasoningAdapter(tokenizer)
    assert tokenizer.convert_tokens_to_ids("</think>") in reasoning.reasoning_end_token_ids


def test_chat_template_ends_with_generation_prompt(demo_model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(demo_model_dir)
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.decode(ids) == text


def test_eos_is_the_end_of_turn_token(demo_model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(demo_model_dir)
    assert tokenizer.eos_token == EOS
    config = transformers.AutoConfig.from_pretrained(demo_model_dir)
    assert config.eos_token_id == tokenizer.convert_tokens_to_ids(EOS)
    generation = json.loads((demo_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config.eos_token_id


def test_tokenizer_round_trips_and_is_word_level_on_prose(demo_model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(demo_model_dir)
    text = "The office is quiet in the morning, and the machines wait for work."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.split()) * 2
    assert tokenizer.decode(tokenizer("naïve café ☕")["input_ids"]) == "naïve café ☕"


def test_transformers_loads_the_weights(demo_model_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    model = transformers.AutoModelForCausalLM.from_pretrained(demo_model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(demo_model_dir)
    out = model.generate(**tokenizer("Hello", return_tensors="pt"), max_new_tokens=4)
    assert out.shape[-1] > 1
