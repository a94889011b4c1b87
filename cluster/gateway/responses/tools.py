"""The Responses wire format, tools and output formats: flat function tools, custom (freeform)
tools, `tool_choice` and `text.format`, checked as OpenAI checks them and converted for the agent.

Pure: no I/O. A custom tool reaches the model as a function tool taking one string, `input`
(as the working Codex bridges do), and its grammar reaches the node, which has the model write
the input raw and holds it to the grammar; encode.py turns the call back into a
`custom_tool_call`. Schemas are checked by cluster/gateway/openai/tools.py's helpers.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cluster.gateway.openai.tools import (
    FunctionDefinition,
    Lenient,
    as_tool_choice,
    field_error,
    schema_problem,
    unsupported,
)
from node_agent.types import Constraint, ConstraintKind, Tool, ToolChoice, ToolChoiceMode

# The one argument of the function a custom tool becomes: its freeform input.
CUSTOM_PARAMETERS = (
    '{"type":"object","properties":{"input":{"type":"string"}},"required":["input"]}'
)
TOOL_TYPES = ("function", "custom")
# Tools only OpenAI's servers can run: left out, so that the model is not offered what no one
# here would carry out (Codex offers web_search by default).
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "image_generation",
        "local_shell",
        "mcp",
    }
)


class FunctionTool(FunctionDefinition):
    """`{"type": "function", "name", "description", "parameters", "strict"}`, flat (unlike
    chat, where the definition sits under "function")."""

    type: Literal["function"]

    def to_tool(self) -> Tool:
        """The agent's record of this tool."""
        tool = Tool(name=self.name, description=self.description or "", strict=bool(self.strict))
        if self.parameters is None:
            return tool
        return replace(tool, parameters=json.dumps(self.parameters))


class CustomFormat(Lenient):
    """A custom tool's input format: free text, or text matching a Lark or regex grammar."""

    type: Literal["text", "grammar"]
    syntax: Literal["lark", "regex"] | None = None
    definition: str | None = Field(default=None, validate_default=True)

    @field_validator("definition")
    @classmethod
    def _grammar_given(cls, definition: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("type") == "grammar" and not (definition and info.data.get("syntax")):
            raise field_error("missing", "a grammar format needs its syntax and definition")
        return definition


class CustomTool(Lenient):
    """`{"type": "custom", "name", "description", "format"}`: a tool taking freeform text."""

    type: Literal["custom"]
    name: str = Field(min_length=1)
    description: str | None = None
    format: CustomFormat | None = None

    def to_tool(self) -> Tool:
        """The function tool the model sees: one string argument, `input`, with the grammar
        shown in its description and given to the node, which holds the input to it."""
        description = self.description or ""
        tool = Tool(name=self.name, description=description, parameters=CUSTOM_PARAMETERS)
        if self.format is None or self.format.type != "grammar" or not self.format.definition:
            return tool
        grammar = f"The input must match this {self.format.syntax} grammar:\n"
        description = f"{description}\n\n{grammar}{self.format.definition}".lstrip()
        kind = ConstraintKind.LARK if self.format.syntax == "lark" else ConstraintKind.REGEX
        return replace(
            tool, description=description, grammar=Constraint(kind, self.format.definition)
        )


def _known_tool(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") not in TOOL_TYPES:
        raise unsupported(
            f"tool type {value.get('type')!r} is not supported, only 'function' and 'custom'"
        )
    return value


def unique_names(tools: list[Any] | None) -> list[Any] | None:
    """`tools`, if no two share a name (a call names its tool, so names must differ)."""
    names = [t.name for t in tools or ()]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise field_error("invalid_value", f"duplicate tool name {name!r}; names must differ")
    return tools


def offered(value: Any) -> Any:
    """`tools` as the model is offered them: a namespace's tools in its place (Codex groups its
    sub-agent tools in one), and the hosted tools left out."""
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for tool in value:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace" and isinstance(tool.get("tools"), list):
            out.extend(tool["tools"])
        elif kind not in HOSTED_TOOLS:
            out.append(tool)
    return out


AnyTool = Annotated[
    FunctionTool | CustomTool, Field(discriminator="type"), BeforeValidator(_known_tool)
]
Tools = Annotated[list[AnyTool] | None, BeforeValidator(offered), AfterValidator(unique_names)]


def tool_choice(value: Any) -> ToolChoice | None:
    """`tool_choice` as the agent's ToolChoice: a mode's name, or a function or custom tool by
    name (a custom tool is a function to the model)."""
    if value is None or isinstance(value, str):
        mode: ToolChoice | None = as_tool_choice(value)
        return mode
    if not isinstance(value, dict):
        raise field_error("invalid_type", "Input should be a string or an object")
    if value.get("type") not in TOOL_TYPES:
        raise unsupported(f"tool_choice type {value.get('type')!r} is not supported")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise field_error("missing", f"a {value['type']} tool_choice needs its name")
    return ToolChoice(ToolChoiceMode.NAMED, name)


def check_tool_choice(value: Any, tools: list[FunctionTool | CustomTool] | None) -> Any:
    """`value` (as sent) if `tools` can satisfy it: a forced choice needs tools, a named one a
    tool of that name and type."""
    choice = tool_choice(value)
    if choice is None or choice.mode in (ToolChoiceMode.AUTO, ToolChoiceMode.NONE):
        return value
    if not tools:
        wanted = "'required'" if choice.mode is ToolChoiceMode.REQUIRED else "a named tool"
        raise field_error("invalid_value", f"{wanted} is only allowed when 'tools' are specified")
    kind = value.get("type") if isinstance(value, dict) else None
    if kind and not any(t.name == choice.name and t.type == kind for t in tools):
        raise field_error("invalid_value", f"{kind} tool {choice.name!r} is not among the tools")
    return value


class TextFormat(Lenient):
    """`text.format`: free text, any JSON object, or JSON matching a schema (flat, unlike
    chat's `response_format.json_schema`)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"  # OpenAI requires a name; it changes nothing here
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # the schema is always enforced while decoding

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if problem := schema_problem(schema):
            name = info.data.get("name", "response")
            raise field_error("invalid_schema", f"Invalid schema for format {name!r}: {problem}")
        return schema

    @model_validator(mode="after")
    def _schema_given(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise field_error("missing", "type 'json_schema' needs a schema")
        return self

    def echo(self) -> dict[str, Any]:
        """The format as the response repeats it."""
        if self.type != "json_schema":
            return {"type": self.type}
        return self.model_dump(by_alias=True, exclude_none=True)

    def constraint(self) -> Constraint | None:
        """What the node must enforce for this format; None for free text."""
        if self.type == "json_object":
            return Constraint(ConstraintKind.JSON_OBJECT)
        if self.type == "json_schema" and self.schema_ is not None:
            return Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(self.schema_))
        return None


class TextConfig(Lenient):
    """`text`: the output's format (and `verbosity`, accepted and ignored)."""

    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(Lenient):
    """`reasoning`: how hard to think; `summary` is accepted, but no summaries are written."""

    effort: str | None = None
    summary: str | None = None

    def template_options(self) -> str:
        """The chat template's thinking switch: off for effort none or minimal, else on."""
        if self.effort is None:
            return ""
        return json.dumps({"enable_thinking": self.effort not in ("none", "minimal")})
