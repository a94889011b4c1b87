"""The Anthropic Messages dialect: `/v1/messages` and its token count parsed into the agent
request, and the forwarder's events encoded back as Anthropic messages and event streams."""
