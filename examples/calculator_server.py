"""A tiny MCP server with one tool, ``add``, that the examples hand to a model.

Run it over stdio (what ``ChiaTool.stdio(sys.executable, "calculator_server.py")`` does), or
import ``calculator`` and pass ``ChiaTool.in_process(calculator)``.
"""

from mcp.server import MCPServer

calculator = MCPServer("calculator", log_level="WARNING")


@calculator.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


if __name__ == "__main__":
    calculator.run()  # stdio
