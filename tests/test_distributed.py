"""mambaret.encoding.distributed on a two-node Ray cluster on this machine: the embeddings equal the
single-process ones, in order, with no row lost or repeated, also when an actor dies mid-job;
bad input gives clear errors and no shard folder that looks complete.

Ray runs in one child process (this file run as a script) that starts one cluster for every
scenario and reports what happened; the tests check its outputs here. Ray's threads and global
state thus never enter the test process (on CPython 3.11 a background thread parsing code can
break an unrelated ast.parse, python/cpython#106905). The tests skip without Ray."""
import json
import os
import shutil
import subprocess
import sys
import traceback

import numpy as np
import pytest

TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "tokenizers",
                         "gpt-neox-20b.json")
TEXTS = [f"document {i}: " + "state space models scan " * (i % 9 + 1) for i in range(48)]
IDS = [f"doc-{i}" for i in range(48)]


# ------------------------------------------------------------------ the child: every Ray scenario

def run_scenarios(out: str, model_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    import mambaret.encoding.distributed as mrd
    from mambaret.app import cli

    results = {}

    def scenario(name):
        def wrap(fn):
            try:
                results[name] = {"ok": True, "value": fn()}
            except BaseException as e:  # reported to the test, which says what failed
                results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
            return fn
        return wrap

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    def dataset():
        return ray.data.from_items([{"id": i, "text": t} for i, t in zip(IDS, TEXTS)], override_num_blocks=6)

    @scenario("two_nodes")
    def _():
        nodes = len([n for n in ray.nodes() if n["Alive"]])
        ds = mrd.encode(dataset(), model_dir, batch_size=4, num_actors=2, normalize_embeddings=True, rows_per_call=8)
        return {"nodes": nodes, "manifest": mrd.write_shards(ds, os.path.join(out, "two_nodes"), rows_per_shard=20)}

    marker = os.path.join(out, "crashed")

    class CrashOnce(mrd._EncoderActor):
        """Dies (the whole process) on its second batch, once in the whole job."""

        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().__call__(batch)

    @scenario("killed_actor")
    def _():
        ds = mrd.encode(dataset(), model_dir, batch_size=4, num_actors=2, normalize_embeddings=True,
                        rows_per_call=8, ship_model=True, actor_class=CrashOnce)
        mrd.write_shards(ds, os.path.join(out, "killed_actor"), rows_per_shard=20)
        return {"crashed": os.path.exists(marker)}

    corpus = os.path.join(out, "corpus.jsonl")
    with open(corpus, "w") as f:
        f.write("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in zip(IDS[:5], TEXTS)))

    @scenario("command_line")
    def _():
        return cli.main(["encode", model_dir, corpus, "--normalize", "--batch-size", "2", "--num-actors", "1",
                         "-o", os.path.join(out, "cli"), "--ray"])

    def expect_error(fn):
        try:
            fn()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None

    @scenario("bad_input")
    def _():
        errors = {
            "no_model": expect_error(lambda: mrd.encode(dataset(), os.path.join(out, "no-model"))),
            "no_column": expect_error(lambda: mrd.encode(dataset(), model_dir, text_column="body")),
            "no_corpus": expect_error(lambda: mrd.encode(os.path.join(out, "missing.jsonl"), model_dir)),
            "cli_no_model": cli.main(["encode", os.path.join(out, "no-model"), corpus, "--ray"]),
        }
        # a model folder the nodes cannot read (gone once the job runs)
        moved = os.path.join(out, "model-copy")
        shutil.copytree(model_dir, moved)
        ds = mrd.encode(corpus, moved, batch_size=2, num_actors=1)
        shutil.rmtree(moved)
        errors["node_cannot_read"] = expect_error(lambda: mrd.write_shards(ds, os.path.join(out, "failed")))
        errors["failed_folder"] = sorted(os.listdir(os.path.join(out, "failed")))
        return errors

    ray.shutdown()
    cluster.shutdown()
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run_scenarios(sys.argv[1], sys.argv[2])
    sys.exit(0)


# ------------------------------------------------------------------ the tests

pytest.importorskip("ray")
pytest.importorskip("pyarrow")
pytestmark = pytest.mark.skipif(not os.path.isfile(TOKENIZER), reason="needs ../shared/data/tokenizers")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mambaret.arch.random_model import write_random_model

    path = str(tmp_path_factory.mktemp("model") / "tiny")
    write_random_model(path, seed=3, tokenizer_json=TOKENIZER, hidden_size=32, num_hidden_layers=2)
    return path


@pytest.fixture(scope="module")
def expected(model_dir):
    import mambaret as mr

    return mr.MambaEncoder.from_pretrained(model_dir, threads=1).encode(TEXTS, normalize_embeddings=True)


@pytest.fixture(scope="module")
def ray_run(model_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ray"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      os.environ.get("PYTHONPATH", "")]))
    child = subprocess.run([sys.executable, os.path.abspath(__file__), out, model_dir], env=env,
                           capture_output=True, text=True, timeout=900)
    path = os.path.join(out, "results.json")
    assert child.returncode == 0 and os.path.exists(path), child.stderr[-4000:]
    with open(path) as f:
        return out, json.load(f)


def result(ray_run, name):
    value = ray_run[1][name]
    assert value["ok"], value.get("trace")
    return value["value"]


def check_folder(folder, expected, ids=IDS):
    from mambaret.encoding.shards import load_shards

    got_ids, embeddings = load_shards(folder)
    assert got_ids.tolist() == ids  # in order, none lost, none repeated
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=1e-6)


def test_two_nodes_equal_single_process(ray_run, expected):
    value = result(ray_run, "two_nodes")
    assert value["nodes"] == 2
    assert value["manifest"]["rows"] == 48 and [s["rows"] for s in value["manifest"]["shards"]] == [20, 20, 8]
    check_folder(os.path.join(ray_run[0], "two_nodes"), expected)


def test_actor_killed_mid_job_is_retried(ray_run, expected):
    assert result(ray_run, "killed_actor") == {"crashed": True}  # an actor did die
    check_folder(os.path.join(ray_run[0], "killed_actor"), expected)


def test_command_line_encodes_corpus_files(ray_run, expected):
    assert result(ray_run, "command_line") == 0
    check_folder(os.path.join(ray_run[0], "cli"), expected[:5], IDS[:5])


def test_bad_input(ray_run):
    errors = result(ray_run, "bad_input")
    assert errors["no_model"].startswith("ValueError") and "does not exist" in errors["no_model"]
    assert "no column 'body'" in errors["no_column"]
    assert "no corpus file" in errors["no_corpus"]
    assert errors["cli_no_model"] == 2
    assert errors["node_cannot_read"] and "not readable on node" in errors["node_cannot_read"]
    assert errors["failed_folder"] == []  # nothing left that looks like shards


def test_unreachable_address_fails_fast(monkeypatch):
    import socket

    import ray

    import mambaret.encoding.distributed as mrd

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="cannot reach a Ray cluster"):
        mrd.connect(f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="host:port"):
        mrd.connect("nowhere")
