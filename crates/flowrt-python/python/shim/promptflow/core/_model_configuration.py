"""promptflow.core model configurations: where a prompty's model lives. A `connection` names a
stored connection; it is checked when the configuration is built."""

from dataclasses import asdict, dataclass
from typing import Optional

from promptflow.core._host import connection_exists


class ModelConfiguration:
    _TYPE = ""

    def __post_init__(self):
        if self.connection:
            connection_exists(self.connection)

    def to_dict(self):
        """The configuration as a prompty `configuration:` mapping (unset fields left out)."""
        out = {"type": self._TYPE}
        out.update({k: v for k, v in asdict(self).items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, data):
        return cls(**data)


@dataclass
class OpenAIModelConfiguration(ModelConfiguration):
    model: str = None
    base_url: Optional[str] = None
    api_key: Optional[str] = None
    organization: Optional[str] = None
    connection: Optional[str] = None
    _TYPE = "openai"


@dataclass
class AzureOpenAIModelConfiguration(ModelConfiguration):
    azure_deployment: str = None
    azure_endpoint: Optional[str] = None
    api_version: Optional[str] = None
    api_key: Optional[str] = None
    organization: Optional[str] = None
    connection: Optional[str] = None
    _TYPE = "azure_openai"
