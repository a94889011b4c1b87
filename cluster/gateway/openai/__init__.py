"""The OpenAI dialect: chat and text completions parsed into the agent request, and the
forwarder's events encoded back as OpenAI bodies and server-sent event streams."""
