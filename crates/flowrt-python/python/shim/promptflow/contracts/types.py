"""promptflow.contracts.types compatibility: marker string types used in tool signatures."""


class Secret(str):
    pass


class PromptTemplate(str):
    pass


class FilePath(str):
    pass


class AssistantDefinition:
    """An assistant definition (`model`, `instructions`, `tools`), read from the YAML file a tool
    input annotated with this type names."""

    def __init__(self, model="", instructions="", tools=None):
        self.model = model
        self.instructions = instructions
        self.tools = list(tools or [])
        self._tool_invoker = None

    @staticmethod
    def deserialize(data):
        return AssistantDefinition(
            model=data.get("model", ""), instructions=data.get("instructions", ""), tools=data.get("tools", [])
        )

    def serialize(self):
        return {"model": self.model, "instructions": self.instructions, "tools": self.tools}

    def __eq__(self, other):
        return isinstance(other, AssistantDefinition) and self.serialize() == other.serialize()

    def __repr__(self):
        return f"AssistantDefinition(model={self.model!r}, instructions={self.instructions!r}, tools={self.tools!r})"


class AttrDict(dict):
    """A dictionary that allows attribute access to its keys."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value
