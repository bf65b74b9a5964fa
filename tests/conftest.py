"""Shared fixtures: the real CLIs, a real MCP server and the scripted model server
(tests/cli_support.py), for the conformance tests and the CLI backend tests alike."""

pytest_plugins = ["tests.cli_support"]
