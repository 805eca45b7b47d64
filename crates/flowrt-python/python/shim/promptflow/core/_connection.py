"""promptflow.core._connection compatibility: the connection classes, where promptflow defines them."""

from promptflow.connections import (  # noqa: F401
    AzureAIServicesConnection,
    AzureContentSafetyConnection,
    AzureOpenAIConnection,
    CognitiveSearchConnection,
    CustomConnection,
    CustomStrongTypeConnection,
    FormRecognizerConnection,
    OpenAIConnection,
    QdrantConnection,
    SerpConnection,
    ServerlessConnection,
    WeaviateConnection,
    _Connection,
    _StrongTypeConnection,
)
