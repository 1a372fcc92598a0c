"""Faust codecs for table keys and values: state crosses faust as bytes via tether's own codec."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from tether.models.state_codec import dump_session, dump_token, load_session, load_token

UTF8 = "tether_utf8"
SESSION = "tether_session"
TOKEN = "tether_token"  # noqa: S105  # a codec name, not a secret


class _Utf8(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return str(obj).encode()

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class _Session(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return dump_session(obj)

    def _loads(self, s: bytes) -> Any:
        return load_session(s) if s else None


class _Token(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return dump_token(obj)

    def _loads(self, s: bytes) -> Any:
        return load_token(s) if s else None


def register() -> None:
    """Register tether's codecs with faust (idempotent)."""
    codecs.register(UTF8, _Utf8())
    codecs.register(SESSION, _Session())
    codecs.register(TOKEN, _Token())
