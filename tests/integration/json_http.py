"""A few lines of JSON over HTTP with the standard library (the SSF tests' client)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def request_json(
    method: str, url: str, body: Any, *, token: str | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """(status, parsed JSON body or None). Raises OSError when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310  # test URLs
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def post_json(url: str, body: Any, *, token: str | None = None) -> tuple[int, Any]:
    """POST ``body`` as JSON."""
    return request_json("POST", url, body, token=token)
