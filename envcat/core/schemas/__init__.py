"""Pydantic wire models of the api (server side; the CLI installs without pydantic)."""
