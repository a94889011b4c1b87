"""The generated agent contract under short names; only the service and the node client use it."""

from node_agent._proto.meterless.agent.v1 import agent_pb2 as pb
from node_agent._proto.meterless.agent.v1 import agent_pb2_grpc as pb_grpc
from node_agent.types import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "pb", "pb_grpc"]
