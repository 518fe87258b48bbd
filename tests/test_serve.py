"""`mambaret serve` driven over a loopback port by real clients (openai, httpx, LangChain's
OpenAIEmbeddings): the rows equal MambaEncoder.encode's, bad requests get a 4xx with a message
and leave the server serving, and SIGTERM drains and exits 0."""
from __future__ import annotations

import base64
import concurrent.futures
import re
import signal
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

import mambaret as mr  # noqa: E402
from mambaret.search.retrieval import build_index  # noqa: E402

from serve_support import ServerProcess, port_open, raw_request  # noqa: E402

KEY = "test-key-0123456789"
MAX_INPUTS = 16
MAX_INPUT_TOKENS = 64
MAX_BODY = 65536
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXTS = ["state space models for retrieval", "cooking pasta with tomatoes", "linear time sequence models",
         "a", "The quick brown fox jumps over the lazy dog. " * 3, "émigré naïve café — 漢字 🙂"]
DOCS = {f"d{i}": text for i, text in enumerate([
    "state space models for retrieval", "cooking pasta with tomatoes", "linear time sequence models",
    "selective scans run in linear time", "tomato sauce and fresh basil", "transformers use attention",
    "retrieval augmented generation with dense vectors", "bm25 is a lexical ranking function",
    "the recipe needs two eggs", "mamba is a state space language model"])}


@pytest.fixture(scope="module")
def encoder():
    return mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=1)


@pytest.fixture(scope="module")
def corpus_and_index(tmp_path_factory, encoder):
    folder = tmp_path_factory.mktemp("serve_index")
    corpus = folder / "docs.trec"
    corpus.write_text("".join(f"<DOC>\n<DOCNO>{d}</DOCNO>\n{t}\n</DOC>\n" for d, t in DOCS.items()), encoding="utf-8")
    index_path = folder / "docs.index"
    build_index(encoder, DOCS).save(str(index_path))
    return str(corpus), str(index_path)


@pytest.fixture(scope="module")
def server(corpus_and_index):
    corpus, index = corpus_and_index
    with ServerProcess("--api-key", KEY, "--index", index, "--hybrid", corpus, "--max-inputs", str(MAX_INPUTS),
                       "--max-input-tokens", str(MAX_INPUT_TOKENS), "--max-body-bytes", str(MAX_BODY),
                       "--body-timeout", "1") as running:
        yield running
        assert running.stop() == 0


@pytest.fixture(scope="module")
def open_server():
    """No key, this model's token ids accepted, and a long wait for company (so that concurrent
    requests surely share a forward)."""
    with ServerProcess("--accept-token-ids", "--max-wait-ms", "150", "--model-id", "mamba-test") as running:
        yield running
        assert running.stop() == 0


def client(server) -> "openai.OpenAI":
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


def assert_rows_equal(got, want):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# -- the OpenAI contract --------------------------------------------------------------------------

def test_openai_client_float_rows_equal_encode(server, encoder):
    response = client(server).embeddings.create(input=TEXTS, model="default", encoding_format="float")
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    assert response.model == "default"
    assert_rows_equal([d.embedding for d in response.data], encoder.encode(TEXTS, normalize_embeddings=True))
    assert response.usage.prompt_tokens == sum(len(x) for x in encoder.tokenize(TEXTS))
    norms = np.linalg.norm(np.array([d.embedding for d in response.data]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_openai_client_base64_and_single_string(server, encoder):
    # the openai package asks for base64 when no format is given, and decodes it
    response = client(server).embeddings.create(input=TEXTS[:3], model="default")
    assert_rows_equal([d.embedding for d in response.data], encoder.encode(TEXTS[:3], normalize_embeddings=True))
    raw = httpx.post(f"{server.url}/v1/embeddings", headers=AUTH,
                     json={"input": TEXTS[0], "model": "default", "encoding_format": "base64"}).json()
    assert len(raw["data"]) == 1
    row = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(row, encoder.encode(TEXTS[0], normalize_embeddings=True))


def test_dimensions_equal_to_the_full_width_is_accepted(server, encoder):
    response = client(server).embeddings.create(input=TEXTS[:2], model="default", dimensions=encoder.embedding_dim,
                                                encoding_format="float")
    assert len(response.data[0].embedding) == encoder.embedding_dim


def test_models_lists_the_served_id(server, open_server):
    assert [m.id for m in client(server).models.list().data] == ["default"]
    assert client(server).models.retrieve("default").id == "default"
    listed = httpx.get(f"{open_server.url}/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["mamba-test"]


def test_langchain_openai_embeddings(server, encoder):
    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(model="default", base_url=f"{server.url}/v1", api_key=KEY,
                                                   check_embedding_ctx_length=False, max_retries=0)
    assert_rows_equal(embeddings.embed_documents(TEXTS), encoder.encode(TEXTS, normalize_embeddings=True))
    assert_rows_equal(embeddings.embed_query(TEXTS[1]), encoder.encode(TEXTS[1], normalize_embeddings=True))


def test_token_ids_are_refused_with_a_way_out(server):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(server).embeddings.create(input=[[9906, 1917]], model="default")
    message = caught.value.body["message"]
    assert "check_embedding_ctx_length=False" in message and "--accept-token-ids" in message


def test_token_ids_with_the_flag_equal_encode(open_server, encoder):
    ids = encoder.tokenize(TEXTS[:3])
    raw = httpx.post(f"{open_server.url}/v1/embeddings", json={"input": ids, "model": "mamba-test"}).json()
    assert_rows_equal([d["embedding"] for d in raw["data"]], encoder.encode(ids, normalize_embeddings=True))
    single = httpx.post(f"{open_server.url}/v1/embeddings", json={"input": ids[0]}).json()
    assert_rows_equal([single["data"][0]["embedding"]], encoder.encode([ids[0]], normalize_embeddings=True))


# -- TEI and search -------------------------------------------------------------------------------

def test_tei_embed_normalized_raw_and_truncated(server, encoder):
    got = httpx.post(f"{server.url}/embed", headers=AUTH, json={"inputs": TEXTS}).json()
    assert_rows_equal(got, encoder.encode(TEXTS, normalize_embeddings=True))
    raw = httpx.post(f"{server.url}/embed", headers=AUTH, json={"inputs": TEXTS[0], "normalize": False}).json()
    unnormalized = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=1, normalize=False)
    assert_rows_equal(raw, unnormalized.encode([TEXTS[0]]))
    long_text = "retrieval " * 200
    cut = httpx.post(f"{server.url}/embed", headers=AUTH, json={"inputs": [long_text], "truncate": True}).json()
    short = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=1, max_length=MAX_INPUT_TOKENS)
    with pytest.warns(UserWarning, match="truncated"):
        want = short.encode([long_text], normalize_embeddings=True)
    assert_rows_equal(cut, want)


def test_search_dense_and_hybrid(server, encoder):
    from mambaret.evaluation.bm25 import bm25_run
    from mambaret.evaluation.datasets import ranked
    from mambaret.evaluation.fusion import fuse

    queries = ["sequence models in linear time", "pasta with tomato"]
    dense = httpx.post(f"{server.url}/search", headers=AUTH, json={"queries": queries, "k": 3, "hybrid": False}).json()
    vectors = encoder.encode_query(queries, normalize_embeddings=True)
    matrix = encoder.encode_document(list(DOCS.values()), normalize_embeddings=True)
    ids = list(DOCS)
    for result, vector in zip(dense["results"], vectors):
        scores = matrix @ vector
        order = np.argsort(-scores)[:3]
        assert [r["id"] for r in result] == [ids[i] for i in order]
        np.testing.assert_allclose([r["score"] for r in result], scores[order], atol=1e-5)
    hybrid = httpx.post(f"{server.url}/search", headers=AUTH, json={"queries": queries, "k": 3}).json()
    depth = len(DOCS)
    for n, (query, vector) in enumerate(zip(queries, vectors)):
        scores = matrix @ vector
        dense_run = {"q": {ids[i]: float(scores[i]) for i in np.argsort(-scores)[:depth]}}
        fused = fuse([dense_run, bm25_run(DOCS, {"q": query}, k=depth)], top_k=3)
        want = ranked(fused["q"])
        assert [r["id"] for r in hybrid["results"][n]] == [d for d, _ in want]
        np.testing.assert_allclose([r["score"] for r in hybrid["results"][n]], [s for _, s in want], atol=1e-7)
    one = httpx.post(f"{server.url}/search", headers=AUTH, json={"queries": queries[0], "k": 2}).json()
    assert len(one["results"]) == 2 and "id" in one["results"][0]


def test_search_without_an_index_is_404(open_server):
    response = httpx.post(f"{open_server.url}/search", json={"queries": "x"})
    assert response.status_code == 404 and "--index" in response.json()["error"]["message"]


# -- health, metrics, keys ------------------------------------------------------------------------

def test_health_needs_no_key_and_metrics_does(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    for name in ("mambaret_requests_total", "mambaret_tokens_total", "mambaret_batch_inputs_bucket",
                 "mambaret_queue_seconds_sum", "mambaret_compute_seconds_count", "mambaret_request_errors_total"):
        assert name in text
    assert re.search(r'mambaret_requests_total\{endpoint="/health",status="200"\} [1-9]', text)


# -- dynamic batching -----------------------------------------------------------------------------

def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_concurrent_requests_share_forwards_and_get_their_own_rows(open_server, encoder):
    texts = [f"request {i}: " + " ".join(f"word{j}" for j in range(i % 7 + 1)) for i in range(24)]
    long_texts = [" ".join(f"busy{i}x{j}" for j in range(160)) for i in range(16)]

    def send(chunk):
        with httpx.Client() as http:
            body = http.post(f"{open_server.url}/v1/embeddings", json={"input": chunk, "encoding_format": "float"},
                             timeout=120).json()
        return chunk, [d["embedding"] for d in body["data"]]

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        # a long forward first, so that the small requests below arrive while the engine is busy
        busy = pool.submit(send, long_texts)
        deadline = time.monotonic() + 60
        while _metric(open_server.url, "mambaret_queued_inputs") == 0 and not busy.done():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        forwards_before = _metric(open_server.url, "mambaret_batch_inputs_count")
        results = list(pool.map(send, [texts[i:i + 3] for i in range(0, 24, 3)]))
        busy.result()
    for chunk, rows in results:
        assert_rows_equal(rows, encoder.encode(chunk, normalize_embeddings=True))
    forwards = _metric(open_server.url, "mambaret_batch_inputs_count") - forwards_before
    # the long request's forward may end after forwards_before was read: at most one forward more
    assert 1 <= forwards < len(results), f"{len(results)} concurrent requests took {forwards} forwards"


def test_a_bad_token_id_fails_only_its_own_request(open_server, encoder):
    good_ids = encoder.tokenize(TEXTS[:2])

    def send(body):
        return httpx.post(f"{open_server.url}/v1/embeddings", json=body, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(send, [{"input": [[1, 2, 10 ** 6]]}, {"input": good_ids}])
    assert bad.status_code == 422 and "outside the vocabulary" in bad.json()["error"]["message"]
    assert_rows_equal([d["embedding"] for d in good.json()["data"]], encoder.encode(good_ids, normalize_embeddings=True))


def test_a_client_that_disconnects_frees_its_slot(open_server):
    import json
    import socket

    body = json.dumps({"input": ["a text to embed"] * 8}).encode()
    for _ in range(3):
        with socket.create_connection((open_server.host, open_server.port)) as sock:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 30
    while _metric(open_server.url, "mambaret_requests_in_flight") > 1:  # the /metrics request itself
        assert time.monotonic() < deadline, "requests of gone clients still in flight"
        time.sleep(0.05)
    assert httpx.get(f"{open_server.url}/health").status_code == 200


# -- bad requests ---------------------------------------------------------------------------------

LONG_TEXT = "token " * (4 * MAX_INPUT_TOKENS)
BAD_JSON_BODIES = [
    # (path, body, status, words in the message)
    ("/v1/embeddings", {}, 422, "input is required"),
    ("/v1/embeddings", {"input": 5}, 422, "must be a string or a list"),
    ("/v1/embeddings", {"input": []}, 422, "empty list"),
    ("/v1/embeddings", {"input": ""}, 422, "empty string"),
    ("/v1/embeddings", {"input": ["ok", None]}, 422, "input[1] must be a string"),
    ("/v1/embeddings", {"input": ["ok", 3]}, 422, "input[1] must be a string"),
    ("/v1/embeddings", {"input": {"text": "x"}}, 422, "must be a string or a list"),
    ("/v1/embeddings", {"input": [[1, 2], [3]]}, 422, "token ids"),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 422, "token ids"),
    ("/v1/embeddings", {"input": ["x"] * (MAX_INPUTS + 1)}, 413, f"limit of {MAX_INPUTS}"),
    ("/v1/embeddings", {"input": [LONG_TEXT]}, 422, f"limit of {MAX_INPUT_TOKENS} tokens"),
    ("/v1/embeddings", {"input": "x", "model": "text-embedding-3-small"}, 404, "does not exist"),
    ("/v1/embeddings", {"input": "x", "model": 7}, 422, "model must be a string"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
    ("/v1/embeddings", {"input": "x", "encoding_format": 5}, 422, "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": 128}, 422, "cannot be shortened"),
    ("/v1/embeddings", {"input": "x", "dimensions": "384"}, 422, "dimensions must be a positive integer"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 422, "dimensions must be a positive integer"),
    ("/v1/embeddings", {"input": "x", "prompt_name": "query"}, 422, "not one of this model's prompts"),
    ("/v1/embeddings", {"input": "x", "user": 12}, 422, "user must be a string"),
    ("/embed", {"input": "x"}, 422, "inputs is required"),
    ("/embed", {"inputs": "x", "normalize": "yes"}, 422, "normalize must be true or false"),
    ("/embed", {"inputs": "x", "truncate": 1}, 422, "truncate must be true or false"),
    ("/embed", {"inputs": "x", "truncation_direction": "Left"}, 422, "truncation_direction"),
    ("/embed", {"inputs": [[1, 2]]}, 422, "inputs[0] must be a string"),
    ("/search", {"queries": "x", "k": 0}, 422, "k must be an integer"),
    ("/search", {"queries": "x", "k": "5"}, 422, "k must be an integer"),
    ("/search", {"k": 5}, 422, "queries is required"),
    ("/search", {"queries": "x", "hybrid": "no"}, 422, "hybrid must be true or false"),
]


@pytest.mark.parametrize("path, body, status, words", BAD_JSON_BODIES,
                         ids=[f"{p}-{w[:24]}-{n}" for n, (p, _, _, w) in enumerate(BAD_JSON_BODIES)])
def test_bad_json_request(server, path, body, status, words):
    response = httpx.post(f"{server.url}{path}", headers=AUTH, json=body, timeout=30)
    assert_refused(response.status_code, response.content, status, words)


BAD_RAW_REQUESTS = [
    # (path, method, headers, body, status, words)
    ("/v1/embeddings", "POST", AUTH, b'{"input": ["x"', 400, "not valid JSON"),
    ("/v1/embeddings", "POST", AUTH, b"", 400, "body is empty"),
    ("/v1/embeddings", "POST", AUTH, b'["x"]', 422, "must be a JSON object"),
    ("/v1/embeddings", "POST", AUTH, b'{"input": "\xff\xfe"}', 400, "not valid JSON"),
    ("/v1/embeddings", "POST", AUTH, b'{"input": "' + b"x" * MAX_BODY + b'"}', 413, "limit of"),
    ("/v1/embeddings", "POST", {}, b'{"input": "x"}', 401, "missing API key"),
    ("/v1/embeddings", "POST", {"Authorization": "Bearer wrong-key"}, b'{"input": "x"}', 401, "incorrect API key"),
    ("/v1/embeddings", "POST", {"Authorization": f"Basic {KEY}"}, b'{"input": "x"}', 401, "incorrect API key"),
    ("/metrics", "GET", {"Authorization": "Bearer " + KEY[:-1]}, b"", 401, "incorrect API key"),
    ("/v1/models", "GET", {}, b"", 401, "missing API key"),
    ("/no/such/endpoint", "GET", AUTH, b"", 404, "no endpoint"),
    ("/no/such/endpoint", "GET", {}, b"", 401, "missing API key"),
    ("/v1/embeddings", "GET", AUTH, b"", 405, "not allowed"),
    ("/v1/models/gpt-4", "GET", AUTH, b"", 404, "does not exist"),
]


@pytest.mark.parametrize("path, method, headers, body, status, words", BAD_RAW_REQUESTS,
                         ids=[f"{m}-{p}-{s}-{n}" for n, (p, m, _, _, s, _) in enumerate(BAD_RAW_REQUESTS)])
def test_bad_raw_request(server, path, method, headers, body, status, words):
    response = httpx.request(method, f"{server.url}{path}", headers=headers, content=body, timeout=30)
    assert_refused(response.status_code, response.content, status, words)


def test_bad_content_length_and_slow_body(server):
    status, body = raw_request(server.host, server.port,
                               b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                               + b"\r\nContent-Length: " + str(10 * MAX_BODY).encode() + b"\r\n\r\n")
    assert_refused(status, body, 413, "limit of")
    # a body that trickles in slower than --body-timeout (1 s here)
    status, body = raw_request(server.host, server.port,
                               b"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                               + b"\r\nContent-Length: 40\r\n\r\n", [b'{"inputs": ', b'"slow'], pause_s=1.5)
    assert_refused(status, body, 408, "did not arrive within")


def assert_refused(status: int, content: bytes, want_status: int, words: str):
    import json

    assert status == want_status, content[:300]
    error = json.loads(content)["error"]
    assert words in error["message"], error
    assert error["type"] and "Traceback" not in content.decode("utf-8", "replace")


def test_still_serving_after_bad_requests(server, encoder):
    errors = _metric_with_key(server, "mambaret_request_errors_total")
    assert errors >= len(BAD_JSON_BODIES)  # the refusals above were counted (when they ran first)
    response = client(server).embeddings.create(input=TEXTS[:2], model="default", encoding_format="float")
    assert_rows_equal([d.embedding for d in response.data], encoder.encode(TEXTS[:2], normalize_embeddings=True))


def _metric_with_key(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


# -- shutdown -------------------------------------------------------------------------------------

def test_sigterm_finishes_requests_in_flight_and_exits_0(encoder):
    texts = [" ".join(f"word{j}" for j in range(i % 50 + 150)) for i in range(64)]
    with ServerProcess("--max-wait-ms", "0") as running:
        url = running.url

        def send(i: int):
            chunk = texts[i * 8:(i + 1) * 8]
            body = httpx.post(f"{url}/v1/embeddings", json={"input": chunk, "encoding_format": "float"},
                              timeout=120).json()
            return chunk, [d["embedding"] for d in body["data"]]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, i) for i in range(8)]
            deadline = time.monotonic() + 60
            while _metric(url, "mambaret_requests_in_flight") < 3:  # the metrics request and two others at least
                assert time.monotonic() < deadline and not all(f.done() for f in futures)
                time.sleep(0.01)
            running.process.send_signal(signal.SIGTERM)
            results = [f.result() for f in futures]
        assert running.process.wait(60) == 0
        assert not port_open(running.host, running.port)
    for chunk, rows in results:
        assert_rows_equal(rows, encoder.encode(chunk, normalize_embeddings=True))
    assert "requests accepted" in "".join(running.stdout)


def test_bad_command_lines_exit_2_with_a_message(tmp_path):
    import subprocess
    import sys

    from serve_support import REPO_ROOT

    for args, words in ((["--hybrid", "corpus.trec"], "--hybrid needs --index"),
                        (["--index", str(tmp_path / "missing.index")], "no index file"),
                        (["--max-inputs", "0"], "max_inputs must be a positive integer")):
        done = subprocess.run([sys.executable, "-m", "mambaret", "serve", "--port", "0", *args], cwd=str(REPO_ROOT),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
