"""The OpenAI Responses API wire dialect, stateless: parse.py, tools.py, encode.py, stream.py."""
