"""The shared provider tool loop: MCP sessions, tool-schema compilers, the loop itself."""
