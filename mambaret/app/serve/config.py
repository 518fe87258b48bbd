"""The server's settings: what it serves, its limits and its batching."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

API_KEY_ENV = "MAMBARET_API_KEY"


@dataclass
class ServeConfig:
    """Everything `mambaret serve` can be told; the defaults are the documented ones."""

    model_id: str = "default"
    api_key: Optional[str] = None
    # limits: a request over them is refused before any work is done for it
    max_body_bytes: int = 16 * 1024 * 1024
    max_inputs: int = 2048
    max_input_tokens: int = 8192
    body_timeout_s: float = 30.0
    max_concurrent_requests: int = 512
    # dynamic batching: how long a request waits for company, and how many tokens one forward takes
    max_wait_ms: float = 2.0
    max_batch_tokens: int = 16384
    # OpenAI clients send tiktoken ids by default; this model's ids are accepted only when asked
    accept_token_ids: bool = False
    search_max_k: int = 1000

    def check(self) -> None:
        positive = {"max_body_bytes": self.max_body_bytes, "max_inputs": self.max_inputs,
                    "max_input_tokens": self.max_input_tokens, "max_concurrent_requests": self.max_concurrent_requests,
                    "max_batch_tokens": self.max_batch_tokens, "search_max_k": self.search_max_k}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ValueError(f"max_wait_ms must be between 0 and 10000, got {self.max_wait_ms!r}")
        if not self.model_id or not isinstance(self.model_id, str):
            raise ValueError("the model id must be a non-empty string")
        if self.api_key is not None and not self.api_key:
            raise ValueError("the API key must not be empty")


def api_key_from(flag: Optional[str]) -> Optional[str]:
    """--api-key wins over MAMBARET_API_KEY; an empty variable means no key."""
    if flag is not None:
        return flag
    return os.environ.get(API_KEY_ENV) or None
