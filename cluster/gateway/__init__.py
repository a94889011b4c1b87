"""The Serve replica behind the endpoint: parse each wire format, route, forward, tally usage."""
