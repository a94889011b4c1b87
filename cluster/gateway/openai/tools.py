"""The OpenAI wire format, tools and output formats: function tools, `tool_choice` and
`response_format`, checked as OpenAI checks them and converted for the agent; and the
validation helpers both request modules (this one and parse.py) share.

Pure: no I/O. A schema is checked with `jsonschema` against its own dialect's metaschema, so a
broken one is a 400 naming it here rather than a failed generation on a node.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Literal

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from node_agent.types import Constraint, ConstraintKind, Tool, ToolChoice, ToolChoiceMode


def field_error(kind: str, message: str) -> PydanticCustomError:
    """A validation error of type `kind`; the message goes as context, so that braces in user
    input never reach pydantic's template."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def unsupported(message: str) -> PydanticCustomError:
    """A validation error for a feature meterless lacks (code `unsupported_value`)."""
    return field_error("unsupported_value", message)


def only_tag(tag: str, what: str) -> AfterValidator:
    """Accept the type tag `tag` and nothing else."""

    def check(value: str) -> str:
        if value != tag:
            raise unsupported(f"{what} {value!r} is not supported, only {tag!r}")
        return value

    return AfterValidator(check)


def schema_problem(schema: dict[str, Any]) -> str | None:
    """What is wrong with `schema` as a JSON Schema (its own `$schema` dialect), None if nothing."""
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return f"{exc.message} (at {exc.json_path})"
    return None


class Lenient(BaseModel):
    """Strict types (a string is not a number) but unknown vendor fields pass through."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class JsonSchemaFormat(Lenient):
    """`response_format.json_schema`: the schema the answer must match."""

    name: str = "response"  # OpenAI requires a name; it changes nothing here
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None  # the schema is always enforced while decoding

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if problem := schema_problem(schema):
            name = info.data.get("name", "response")
            raise field_error(
                "invalid_schema", f"Invalid schema for response_format {name!r}: {problem}"
            )
        return schema


class ResponseFormat(Lenient):
    """`response_format`: free text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = Field(default=None, validate_default=True)

    @field_validator("json_schema")
    @classmethod
    def _schema_given(
        cls, value: JsonSchemaFormat | None, info: ValidationInfo
    ) -> JsonSchemaFormat | None:
        if value is None and info.data.get("type") == "json_schema":
            raise field_error(
                "missing", "type 'json_schema' needs a json_schema object with a schema"
            )
        return value

    def constraint(self) -> Constraint | None:
        """What the node must enforce for this format; None for free text."""
        if self.type == "json_object":
            return Constraint(ConstraintKind.JSON_OBJECT)
        if self.type == "json_schema" and self.json_schema is not None:
            return Constraint(ConstraintKind.JSON_SCHEMA, json.dumps(self.json_schema.schema_))
        return None


class FunctionDefinition(Lenient):
    """A function tool: its name, what it does, and its arguments' JSON schema."""

    # Any non-empty name: OpenAI's [a-zA-Z0-9_-]{1,64} would refuse what local clients send.
    name: str = Field(min_length=1)
    description: str | None = None
    strict: bool | None = None
    parameters: dict[str, Any] | None = Field(default=None, validate_default=True)

    @field_validator("parameters")
    @classmethod
    def _valid_parameters(
        cls, parameters: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        name = info.data.get("name", "")
        if parameters is None:
            if info.data.get("strict"):
                raise field_error("missing", f"strict function {name!r} needs a parameters schema")
            return None
        if problem := schema_problem(parameters):
            raise field_error("invalid_schema", f"Invalid schema for function {name!r}: {problem}")
        return parameters


class FunctionTool(Lenient):
    """One entry of `tools`; only function tools are supported."""

    type: Annotated[str, only_tag("function", "tool type")]
    function: FunctionDefinition

    def to_tool(self) -> Tool:
        """The agent's record of this tool."""
        f = self.function
        tool = Tool(name=f.name, description=f.description or "", strict=bool(f.strict))
        return tool if f.parameters is None else replace(tool, parameters=json.dumps(f.parameters))


def unique_names(tools: list[FunctionTool] | None) -> list[FunctionTool] | None:
    """`tools`, if no two share a name (a call names its function, so names must differ)."""
    seen: set[str] = set()
    for tool in tools or ():
        if (name := tool.function.name) in seen:
            raise field_error(
                "invalid_value", f"duplicate function name {name!r}; tool names must differ"
            )
        seen.add(name)
    return tools


_CHOICE_MODES = {
    m.value: m for m in (ToolChoiceMode.AUTO, ToolChoiceMode.NONE, ToolChoiceMode.REQUIRED)
}


def as_tool_choice(value: Any) -> Any:
    """`tool_choice` as the agent's ToolChoice: a mode's name, or a named function."""
    if value is None or isinstance(value, ToolChoice):
        return value
    if isinstance(value, str):
        if value not in _CHOICE_MODES:
            raise field_error(
                "invalid_value", "Input should be 'auto', 'none', 'required' or a function"
            )
        return ToolChoice(_CHOICE_MODES[value])
    if isinstance(value, dict):
        if value.get("type") != "function":
            raise unsupported(f"tool_choice type {value.get('type')!r} is not supported")
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise field_error("missing", "a function tool_choice needs function.name")
        return ToolChoice(ToolChoiceMode.NAMED, name)
    raise field_error("invalid_type", "Input should be a string or an object")


def check_tool_choice(choice: ToolChoice | None, tools: list[FunctionTool] | None) -> Any:
    """`choice` if `tools` can satisfy it; a forced choice needs tools, a named one its tool."""
    if choice is None or choice.mode in (ToolChoiceMode.AUTO, ToolChoiceMode.NONE):
        return choice
    names = {t.function.name for t in tools or ()}
    if not names:
        wanted = "'required'" if choice.mode is ToolChoiceMode.REQUIRED else "a function"
        raise field_error("invalid_value", f"{wanted} is only allowed when 'tools' are specified")
    if choice.mode is ToolChoiceMode.NAMED and choice.name not in names:
        raise field_error("invalid_value", f"function {choice.name!r} is not among the tools")
    return choice
