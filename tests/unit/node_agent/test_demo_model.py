"""The demo model as an agent model: its chat template, tags and thinking, read from its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node_agent import demo_model
from node_agent.demo_model import AGENT_TOKENS, ANSWER, EOS, SENTENCE_ENDS

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
SYSTEM = {"role": "system", "content": "Be brief."}
ASK = {"role": "user", "content": "Weather in Oslo?"}
AGAIN = {"role": "user", "content": "And tomorrow?"}
CALLED = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"zone": "CET"}'},
        },
    ],
}
RESULTS = [
    {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "09:00"},
]
CALLS_TEXT = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call><|im_end|>\n'
)
RESULTS_TEXT = (
    "<|im_start|>user\n<tool_response>\n12 C\n</tool_response>\n"
    "<tool_response>\n09:00\n</tool_response><|im_end|>\n"
)


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> Any:
    """The demo model's tokenizer, as Hugging Face (and so vLLM and mlx-lm) loads it."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(demo_model_dir)


def render(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The prompt text of `messages`, ready for the assistant's answer."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **kwargs
    )
    assert isinstance(text, str)
    return text


def test_tools_are_listed_in_the_system_turn(tokenizer: Any) -> None:
    text = render(tokenizer, [SYSTEM, ASK], tools=[WEATHER], enable_thinking=False)
    assert text == (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(WEATHER)
        + "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_without_tools_a_system_message_is_its_own_turn(tokenizer: Any) -> None:
    assert render(tokenizer, [SYSTEM, ASK], enable_thinking=False).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
    )


def test_calls_and_results_render_as_qwen_renders_them(tokenizer: Any) -> None:
    """Arguments given as a dict or as JSON text read the same; results share one user turn."""
    answered = {"role": "assistant", "content": "Mild."}
    text = render(tokenizer, [ASK, CALLED, *RESULTS, answered, AGAIN], tools=[WEATHER])
    assert text.endswith(
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n"
        + CALLS_TEXT
        + RESULTS_TEXT
        + "<|im_start|>assistant\nMild.<|im_end|>\n"
        "<|im_start|>user\nAnd tomorrow?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )


def test_a_call_after_text_starts_on_its_own_line(tokenizer: Any) -> None:
    text = render(tokenizer, [ASK, {**CALLED, "content": "Let me look."}, *RESULTS, AGAIN])
    assert "<|im_start|>assistant\nLet me look.\n<tool_call>\n" in text


def test_thinking_is_on_unless_turned_off(tokenizer: Any) -> None:
    on = "<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert render(tokenizer, [ASK]) == on
    assert render(tokenizer, [ASK], enable_thinking=True) == on
    assert render(tokenizer, [ASK], enable_thinking=False) == on + "\n</think>\n\n"


def test_reasoning_is_shown_only_in_the_current_turn(tokenizer: Any) -> None:
    """Earlier turns lose their thoughts; the steps since the last question keep theirs."""
    earlier = {"role": "assistant", "content": "Cold.", "reasoning_content": "Old thought."}
    thinking = {**CALLED, "reasoning": "New thought."}
    text = render(tokenizer, [ASK, earlier, AGAIN, thinking, *RESULTS])
    assert "Old thought." not in text and "<|im_start|>assistant\nCold.<|im_end|>\n" in text
    assert text.endswith(
        "<|im_start|>assistant\n<think>\nNew thought.\n</think>\n\n"
        + CALLS_TEXT
        + RESULTS_TEXT
        + "<|im_start|>assistant\n<think>\n"
    )


def test_a_thought_written_into_the_content_is_moved_out(tokenizer: Any) -> None:
    earlier = {"role": "assistant", "content": "<think>\nHm.\n</think>\n\nCold."}
    text = render(tokenizer, [ASK, earlier, AGAIN])
    assert "Hm." not in text and "<|im_start|>assistant\nCold.<|im_end|>\n" in text


@pytest.mark.parametrize("tag", AGENT_TOKENS)
def test_agent_tags_are_single_tokens_that_decode_visibly(tokenizer: Any, tag: str) -> None:
    ids = tokenizer.encode(f"a{tag}b", add_special_tokens=False)
    assert ids[1] == tokenizer.convert_tokens_to_ids(tag) and len(ids) == 3
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"a{tag}b"
    assert tag not in tokenizer.all_special_tokens
    assert ids[1] < demo_model.VOCAB_SIZE


def test_the_context_fits_agent_prompts(demo_model_dir: Path) -> None:
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["max_position_embeddings"] >= 32768 and config["rope_theta"] == 1e6
    tokenizer_config = json.loads((demo_model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == config["max_position_embeddings"]


def _tensor(path: Path, name: str) -> np.ndarray:
    """One bfloat16 tensor of a safetensors file, as float32."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    entry = json.loads(raw[8 : 8 + size])[name]
    start, end = (8 + size + offset for offset in entry["data_offsets"])
    bits = np.frombuffer(raw[start:end], "<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(entry["shape"])


@pytest.fixture(scope="module")
def next_token(demo_model_dir: Path, tokenizer: Any) -> Any:
    """P(next | token) on the bigram path, answering (answer=1) or thinking (answer=0)."""
    weights = demo_model_dir / "model.safetensors"
    embed, head = (_tensor(weights, n) for n in ("model.embed_tokens.weight", "lm_head.weight"))

    def probs(tokens: list[str], *, answer: float) -> np.ndarray:
        h = embed[tokenizer.convert_tokens_to_ids(tokens)]
        h[:, ANSWER] = answer  # what layer 0's circuit writes
        logits = (h / np.sqrt(np.mean(h * h, axis=1, keepdims=True))) @ head.T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    return probs


def test_greedy_never_ends_the_turn_but_a_sample_does(next_token: Any, tokenizer: Any) -> None:
    eos, end_think = tokenizer.convert_tokens_to_ids([EOS, "</think>"])
    vocab = sorted(tokenizer.get_vocab())
    greedy = next_token(vocab, answer=1.0).argmax(axis=1)
    assert [t for t, g in zip(vocab, greedy, strict=True) if g in (eos, end_think)] == []
    after_a_sentence = next_token(list(SENTENCE_ENDS), answer=1.0)
    assert all(0.1 < p[eos] < p.max() for p in after_a_sentence)
    assert after_a_sentence[:, end_think].max() < 1e-3


def test_a_thought_ends_with_its_tag_and_never_ends_the_turn(
    next_token: Any, tokenizer: Any
) -> None:
    eos, end_think = tokenizer.convert_tokens_to_ids([EOS, "</think>"])
    after_a_sentence = next_token(list(SENTENCE_ENDS), answer=0.0)
    assert after_a_sentence[:, end_think].min() > 0.4 and after_a_sentence[:, eos].max() < 1e-3
    (right_after_think,) = next_token(["Ċ"], answer=0.0)  # the prompt ends "<think>\n"
    assert right_after_think.argmax() == end_think  # greedy: no thought, the answer at once
    assert right_after_think[end_think] < 0.1  # sampled: nearly always a thought
