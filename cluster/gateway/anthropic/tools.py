"""The Anthropic wire format, tools and options: custom tools, `tool_choice`, `thinking` and
`output_config.format`, checked as Anthropic checks them and converted for the agent.

Pure: no I/O. Server tools (web search, code execution: a `type` such as "web_search_20250305")
run on Anthropic's own servers; nothing here can run them, so they are refused by name rather
than silently dropped from what the model is told it may call.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from cluster.gateway.bounds import TokenCount
from cluster.gateway.openai.tools import Lenient, field_error, schema_problem, unsupported
from node_agent.types import Constraint, ConstraintKind, Tool, ToolChoice, ToolChoiceMode


def _custom_only(kind: str | None) -> str | None:
    if kind not in (None, "custom"):
        raise unsupported(
            f"tool type {kind!r} is not supported: server tools run on Anthropic's servers; "
            "only custom tools (a name and an input_schema) are"
        )
    return kind


class ToolParam(Lenient):
    """One entry of `tools`: a custom tool, its name, what it does and its input's schema."""

    type: Annotated[str | None, AfterValidator(_custom_only)] = None  # checked first: see above
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if problem := schema_problem(schema):
            name = info.data.get("name", "")
            message = f"Invalid input_schema for tool {name!r}: {problem}"
            raise field_error("invalid_schema", message)
        return schema

    def to_tool(self) -> Tool:
        """The agent's record of this tool."""
        return Tool(
            name=self.name,
            description=self.description or "",
            parameters=json.dumps(self.input_schema),
            strict=bool(self.strict),
        )


def unique_names(tools: list[ToolParam] | None) -> list[ToolParam] | None:
    """`tools`, if no two share a name (a tool_use names its tool, so names must differ)."""
    seen: set[str] = set()
    for tool in tools or ():
        if tool.name in seen:
            raise field_error("invalid_value", f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)
    return tools


_MODES = {
    "auto": ToolChoiceMode.AUTO,
    "any": ToolChoiceMode.REQUIRED,
    "tool": ToolChoiceMode.NAMED,
    "none": ToolChoiceMode.NONE,
}


class ToolChoiceParam(Lenient):
    """`tool_choice`: auto, any (some tool), tool (the named one) or none."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, validate_default=True)
    disable_parallel_tool_use: bool | None = None

    @field_validator("name")
    @classmethod
    def _named(cls, name: str | None, info: ValidationInfo) -> str | None:
        if not name and info.data.get("type") == "tool":
            raise field_error("missing", "tool_choice type 'tool' needs the tool's name")
        return name

    def to_tool_choice(self) -> ToolChoice:
        """The agent's tool choice."""
        mode = _MODES[self.type]
        return ToolChoice(mode, (self.name or "") if mode is ToolChoiceMode.NAMED else "")


def check_tool_choice(choice: ToolChoiceParam | None, tools: list[ToolParam] | None) -> Any:
    """`choice` if `tools` can satisfy it: `any` needs tools, `tool` its named tool."""
    if choice is None or choice.type in ("auto", "none"):
        return choice
    names = {t.name for t in tools or ()}
    if not names:
        raise field_error("invalid_value", f"tool_choice {choice.type!r} needs 'tools'")
    if choice.type == "tool" and choice.name not in names:
        raise field_error("invalid_value", f"tool {choice.name!r} is not among the tools")
    return choice


class ThinkingParam(Lenient):
    """`thinking`: whether the model reasons before it answers."""

    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: TokenCount | None = None  # accepted: no engine caps reasoning

    def template_options(self) -> str:
        """The chat template's switch for it, as the agent's template_options."""
        return json.dumps({"enable_thinking": self.type != "disabled"})


class JsonOutputFormat(Lenient):
    """`output_config.format`: the answer must be JSON matching `schema`."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        if problem := schema_problem(schema):
            raise field_error("invalid_schema", f"Invalid schema for output_config: {problem}")
        return schema


class OutputConfig(Lenient):
    """`output_config`; only `format` changes anything (`effort` is accepted and ignored)."""

    format: JsonOutputFormat | None = None

    def constraint(self) -> Constraint | None:
        """What the node must enforce; None for free text."""
        if self.format is None:
            return None
        return Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(self.format.schema_))
