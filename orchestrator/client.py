"""A small client of the REST API, for the operator commands of the CLI.

Errors come back as ``ApiError`` with the exit code the CLI uses: 1 when the
supervisor cannot be reached or fails (5xx), 2 when it refuses the request
(4xx: unknown container, bad policy, wrong token), with the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8765"
TIMEOUT = 10.0


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200,)) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None
        if response.status_code not in ok:
            raise _refused(response)
        return response.json()

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow GET /events: (event, data) pairs until the server ends the stream."""
        try:
            with self.http.stream("GET", "/events", timeout=httpx.Timeout(TIMEOUT, read=None)) as response:
                if response.status_code != 200:
                    response.read()
                    raise _refused(response)
                kind = "message"
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                    elif line.startswith("data:"):
                        yield kind, json.loads(line.partition(":")[2])
                    elif not line:
                        kind = "message"
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None

    def _unreachable(self, err: httpx.HTTPError) -> ApiError:
        return ApiError(
            1,
            f"cannot reach the tandem API at {self.url} ({err.__class__.__name__}: {err}); "
            "is `tandem serve` running? (set --url or TANDEM_API_URL)",
        )


def _refused(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    code = 1 if response.status_code >= 500 else 2
    return ApiError(code, f"{response.status_code}: {detail}")
