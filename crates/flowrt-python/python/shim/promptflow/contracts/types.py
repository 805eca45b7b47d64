"""promptflow.contracts.types compatibility: marker string types used in tool signatures."""


class Secret(str):
    pass


class PromptTemplate(str):
    pass


class FilePath(str):
    pass
