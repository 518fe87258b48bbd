"""The server's ASGI app in process (starlette's TestClient, no socket): an engine failure is a 500
in OpenAI's format with no detail or trace, and the app keeps serving; the CLI's parser does not
import the ASGI stack."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import mambaret as mr  # noqa: E402
from mambaret.app.serve.app import create_app  # noqa: E402
from mambaret.app.serve.config import ServeConfig  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402


def test_an_engine_failure_is_a_500_without_detail_and_the_app_keeps_serving():
    encoder = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=1)
    working = encoder.forward_packed
    failing = {"on": True}

    def forward_packed(batch, **kwargs):
        if failing["on"]:
            raise RuntimeError("secret engine detail at 0xdeadbeef")
        return working(batch, **kwargs)

    encoder.forward_packed = forward_packed
    app = create_app(encoder, ServeConfig())
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/embeddings", json={"input": ["a text"]})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["message"]
        assert "secret" not in response.text and "Traceback" not in response.text
        failing["on"] = False
        again = client.post("/v1/embeddings", json={"input": ["a text"], "encoding_format": "float"})
        assert again.status_code == 200
        np.testing.assert_allclose(again.json()["data"][0]["embedding"],
                                   encoder.encode("a text", normalize_embeddings=True), atol=1e-6, rtol=0)
        assert 'mambaret_requests_total{endpoint="/v1/embeddings",status="500"} 1' in client.get("/metrics").text


def test_the_command_line_parser_does_not_import_the_server():
    code = ("import sys; from mambaret.app.cli import build_parser; build_parser(); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')], 'ASGI imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO_ROOT))


def test_a_model_without_a_tokenizer_takes_its_own_token_ids(tmp_path):
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "model"), seed=0, hidden_size=16, num_hidden_layers=1, vocab_size=50)
    encoder = mr.MambaEncoder.from_pretrained(path, threads=1)
    assert encoder.tokenizer is None
    with TestClient(create_app(encoder, ServeConfig(accept_token_ids=True, model_id="tiny"))) as client:
        refused = client.post("/v1/embeddings", json={"input": "text"})
        assert refused.status_code == 422 and "no tokenizer" in refused.json()["error"]["message"]
        ids = [[1, 2, 3], [4, 5]]
        rows = client.post("/v1/embeddings", json={"input": ids, "model": "tiny", "encoding_format": "float"}).json()
        np.testing.assert_allclose([d["embedding"] for d in rows["data"]], encoder.encode(ids, normalize_embeddings=True),
                                   atol=1e-6, rtol=0)
        assert rows["usage"]["prompt_tokens"] == 5
