"""The HTTP API (starlette): JSON in, JSON out, problem+json for every error."""
