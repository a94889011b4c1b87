"""Errors the agent reports to its callers.

    AgentError                  base; never escapes the service as anything but a gRPC status
    ├── UnknownModel            the reference resolves to nothing (no such path, hub id, or name)
    ├── ModelNotLoaded          the model exists but is not loaded on this node
    ├── InvalidRequest          bad sampling values, empty prompt, malformed messages
    │   └── PromptTooLong       the prompt does not fit the model's context
    ├── OutOfMemory             loading the model would not fit in this node's memory
    ├── EngineUnavailable       the engine asked for is not installed on this node
    └── LoadFailed              the engine could not load the files (corrupt, unsupported)

service.py maps each to one gRPC status code; engines raise these and nothing else on bad input.
"""


class AgentError(Exception):
    """Base of every error the agent reports on purpose."""


class UnknownModel(AgentError):
    """No model by that reference or name."""


class ModelNotLoaded(AgentError):
    """The model is known but not loaded on this node."""


class InvalidRequest(AgentError):
    """The request is malformed or its values are out of range."""


class PromptTooLong(InvalidRequest):
    """The prompt (plus room for one token) exceeds the model's context length."""


class OutOfMemory(AgentError):
    """The model does not fit in the memory this node has free."""


class EngineUnavailable(AgentError):
    """The requested engine is not available on this node."""


class LoadFailed(AgentError):
    """The engine failed to load the model's files."""
