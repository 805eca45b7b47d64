"""promptflow.connections compatibility: the connection classes flowrt can inject into tools."""

__all__ = [
    "AzureAIServicesConnection",
    "AzureContentSafetyConnection",
    "AzureOpenAIConnection",
    "CognitiveSearchConnection",
    "CustomConnection",
    "CustomStrongTypeConnection",
    "FormRecognizerConnection",
    "OpenAIConnection",
    "QdrantConnection",
    "SerpConnection",
    "ServerlessConnection",
    "WeaviateConnection",
]


class _Connection:
    TYPE = "custom"

    def __init__(self, configs=None, secrets=None, name=None):
        object.__setattr__(self, "configs", dict(configs or {}))
        object.__setattr__(self, "secrets", dict(secrets or {}))
        object.__setattr__(self, "name", name)

    def __getattr__(self, item):
        d = self.__dict__
        secrets = d.get("secrets") or {}
        if item in secrets:
            return secrets[item]
        configs = d.get("configs") or {}
        if item in configs:
            return configs[item]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def __getitem__(self, item):
        if item in self.secrets:
            return self.secrets[item]
        if item in self.configs:
            return self.configs[item]
        raise KeyError(f"Key {item!r} not found in connection {self.name!r}.")

    def keys(self):
        """The connection's config then secret keys (so `dict(conn)` and `**conn` work)."""
        return list(self.configs.keys()) + list(self.secrets.keys())

    def is_secret(self, item):
        return item in self.secrets

    def __repr__(self):
        masked = {k: "******" for k in self.secrets}
        return f"{type(self).__name__}(name={self.name!r}, configs={self.configs!r}, secrets={masked!r})"


class CustomConnection(_Connection):
    TYPE = "custom"

    def __init__(self, secrets=None, configs=None, name=None, **kwargs):
        configs = dict(configs or {})
        configs.update(kwargs)
        super().__init__(configs=configs, secrets=secrets, name=name)


class _StrongTypeConnection(_Connection):
    _FIELDS = ()

    def __setattr__(self, key, value):
        if key in self.secrets:
            self.secrets[key] = value
        elif key in self._FIELDS or key in self.configs:
            self.configs[key] = value
        else:
            object.__setattr__(self, key, value)


class OpenAIConnection(_StrongTypeConnection):
    TYPE = "open_ai"
    _FIELDS = ("organization", "base_url")

    def __init__(self, api_key=None, organization=None, base_url=None, name=None, **kwargs):
        configs = {"organization": organization, "base_url": base_url}
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class AzureOpenAIConnection(_StrongTypeConnection):
    TYPE = "azure_open_ai"
    _FIELDS = ("api_base", "api_type", "api_version", "resource_id")

    def __init__(self, api_key=None, api_base=None, api_type="azure", api_version="2024-02-01", name=None, **kwargs):
        configs = {"api_base": api_base, "api_type": api_type or "azure", "api_version": api_version or "2024-02-01"}
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class ServerlessConnection(_StrongTypeConnection):
    TYPE = "serverless"
    _FIELDS = ("api_base",)

    def __init__(self, api_key=None, api_base=None, name=None, **kwargs):
        configs = {"api_base": api_base}
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class SerpConnection(_StrongTypeConnection):
    TYPE = "serp"

    def __init__(self, api_key=None, name=None, **kwargs):
        super().__init__(configs=dict(kwargs), secrets={"api_key": api_key}, name=name)


class _EmbeddingStoreConnection(_StrongTypeConnection):
    _FIELDS = ("api_base",)

    def __init__(self, api_key=None, api_base=None, name=None, **kwargs):
        configs = {"api_base": api_base}
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class QdrantConnection(_EmbeddingStoreConnection):
    TYPE = "qdrant"


class WeaviateConnection(_EmbeddingStoreConnection):
    TYPE = "weaviate"


class CognitiveSearchConnection(_StrongTypeConnection):
    TYPE = "cognitive_search"
    _FIELDS = ("api_base", "api_version")

    def __init__(self, api_key=None, api_base=None, api_version="2023-11-01", name=None, **kwargs):
        configs = {"api_base": api_base, "api_version": api_version or "2023-11-01"}
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class AzureAIServicesConnection(_StrongTypeConnection):
    TYPE = "azure_ai_services"
    _FIELDS = ("endpoint",)

    def __init__(self, api_key=None, endpoint=None, name=None, **kwargs):
        configs = {"endpoint": endpoint}
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class AzureContentSafetyConnection(_StrongTypeConnection):
    TYPE = "azure_content_safety"
    _FIELDS = ("endpoint", "api_version", "api_type")
    _DEFAULT_VERSION = "2023-10-01"
    _DEFAULT_TYPE = "Content Safety"

    def __init__(self, api_key=None, endpoint=None, api_version=None, api_type=None, name=None, **kwargs):
        configs = {
            "endpoint": endpoint,
            "api_version": api_version or self._DEFAULT_VERSION,
            "api_type": api_type or self._DEFAULT_TYPE,
        }
        configs.update(kwargs)
        super().__init__(configs=configs, secrets={"api_key": api_key}, name=name)


class FormRecognizerConnection(AzureContentSafetyConnection):
    TYPE = "form_recognizer"
    _DEFAULT_VERSION = "2023-07-31"
    _DEFAULT_TYPE = "Form Recognizer"


class CustomStrongTypeConnection(_Connection):
    """Base of a custom connection with declared fields:

        class MyConnection(CustomStrongTypeConnection):
            api_key: Secret
            api_base: str

    Fields annotated `Secret` are read from the secrets, the others from the configs (a class
    default is used only when the connection has no such key)."""

    TYPE = "custom"

    def __init__(self, secrets=None, configs=None, name=None, **kwargs):
        super().__init__(configs=configs, secrets=secrets, name=name)
        object.__setattr__(self, "custom_type", type(self).__name__)
        object.__setattr__(self, "module", kwargs.get("module", type(self).__module__))

    @classmethod
    def _fields(cls):
        fields = {}
        for klass in reversed(cls.__mro__):
            fields.update(getattr(klass, "__annotations__", {}) or {})
        return fields

    @staticmethod
    def _is_secret_type(annotation):
        return getattr(annotation, "__name__", annotation) == "Secret"

    def __getattribute__(self, item):
        if not item.startswith("_"):
            fields = type(self)._fields()
            if item in fields:
                d = object.__getattribute__(self, "__dict__")
                store = d["secrets"] if type(self)._is_secret_type(fields[item]) else d["configs"]
                if item in store:
                    return store[item]
        return object.__getattribute__(self, item)

    def __setattr__(self, key, value):
        fields = type(self)._fields()
        if key in fields:
            store = self.secrets if type(self)._is_secret_type(fields[key]) else self.configs
            store[key] = value
        else:
            object.__setattr__(self, key, value)
