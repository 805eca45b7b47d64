def list_package_tools():
    """What promptflow reads from a tool package: each tool's id, kind and inputs."""
    return {
        "my_tools.echo.echo": {
            "name": "Echo",
            "description": "Says the text again",
            "type": "python",
            "module": "my_tools.echo",
            "function": "echo",
            "inputs": {"text": {"type": ["string"]}, "times": {"type": ["int"], "default": 2}},
        }
    }
