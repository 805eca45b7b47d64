"""promptflow.contracts.multimedia compatibility: images as bytes with a MIME type.

An Image crosses between flowrt and its Python workers as the dict
``{"__flowrt_image__": {"mime": ..., "base64": ...}}``; flow inputs of type image and image
literals arrive as promptflow's ``{"data:image/<format>;path|base64|url": value}`` dicts.
"""
import base64
import hashlib


class PFBytes(bytes):
    """Bytes with a MIME type (and where they came from)."""

    def __new__(cls, value, *args, **kwargs):
        return super().__new__(cls, value)

    def __init__(self, value, mime_type, source_url=None):
        super().__init__()
        self._mime_type = mime_type
        self._source_url = source_url
        self._hash = hashlib.sha1(bytes(value)).hexdigest()[:8]

    @property
    def source_url(self):
        return self._source_url

    def to_base64(self, with_type=False):
        encoded = base64.b64encode(self).decode("utf-8")
        return f"data:{self._mime_type};base64,{encoded}" if with_type else encoded


# Leading bytes of the image formats a file's type is recognised by (as promptflow does with
# the `filetype` package when no MIME type is given).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
)


def _guess_mime(value):
    head = bytes(value[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for signature, mime in _SIGNATURES:
        if head.startswith(signature):
            return mime
    return "image/*"


class Image(PFBytes):
    """An image: bytes with an ``image/...`` MIME type (guessed from its bytes when not given,
    ``image/*`` when unknown)."""

    def __init__(self, value, mime_type=None, source_url=None):
        super().__init__(value, mime_type or _guess_mime(value), source_url)

    def __str__(self):
        return f"Image({self._hash})"

    def __repr__(self):
        return f"Image({self._hash})"

    def serialize(self, encoder=None):
        return encoder(self) if encoder is not None else str(self)


class Text(str):
    """Text with annotations (promptflow's assistant messages)."""

    def __new__(cls, value, annotations=None):
        obj = super().__new__(cls, value)
        obj._annotations = annotations or []
        return obj

    @classmethod
    def deserialize(cls, data):
        return cls(data.get("value", ""), data.get("annotations"))

    def serialize(self):
        return {"type": "text", "text": {"value": str(self), "annotations": self._annotations}}
