"""mambaret.distributed on a two-node Ray cluster on this machine: the embeddings equal the
single-process ones, in order, with no row lost or repeated, also when an actor dies mid-job.

One cluster serves the module (starting Ray is most of the cost); the tests skip without Ray."""
import json
import os
import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

import mambaret as mr  # noqa: E402
import mambaret.distributed as mrd  # noqa: E402
from mambaret import cli  # noqa: E402
from mambaret.random_model import write_random_model  # noqa: E402
from mambaret.shards import MANIFEST, load_shards  # noqa: E402

TOKENIZER = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tokenizers", "gpt-neox-20b.json")
pytestmark = pytest.mark.skipif(not os.path.isfile(TOKENIZER), reason="needs ../shared/data/tokenizers")

TEXTS = [f"document {i}: " + "state space models scan " * (i % 9 + 1) for i in range(48)]
IDS = [f"doc-{i}" for i in range(48)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "tiny")
    write_random_model(path, seed=3, tokenizer_json=TOKENIZER, hidden_size=32, num_hidden_layers=2)
    return path


@pytest.fixture(scope="module")
def expected(model_dir):
    return mr.MambaEncoder.from_pretrained(model_dir, threads=1).encode(TEXTS, normalize_embeddings=True)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def dataset():
    return ray.data.from_items([{"id": i, "text": t} for i, t in zip(IDS, TEXTS)], override_num_blocks=6)


def check_folder(folder, expected):
    ids, embeddings = load_shards(folder)
    assert ids.tolist() == IDS  # in order, none lost, none repeated
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=1e-6)


def test_two_nodes_equal_single_process(cluster, model_dir, expected, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    ds = mrd.encode(dataset(), model_dir, batch_size=4, num_actors=2, normalize_embeddings=True, rows_per_call=8)
    manifest = mrd.write_shards(ds, tmp_path / "shards", rows_per_shard=20)
    assert manifest["rows"] == 48 and [s["rows"] for s in manifest["shards"]] == [20, 20, 8]
    check_folder(tmp_path / "shards", expected)


def test_actor_killed_mid_job_is_retried(cluster, model_dir, expected, tmp_path):
    marker = str(tmp_path / "crashed")

    class CrashOnce(mrd._EncoderActor):
        """Dies (the whole process) on its second batch, once in the whole job."""

        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().__call__(batch)

    ds = mrd.encode(dataset(), model_dir, batch_size=4, num_actors=2, normalize_embeddings=True,
                    rows_per_call=8, ship_model=True, actor_class=CrashOnce)
    mrd.write_shards(ds, tmp_path / "shards", rows_per_shard=20)
    assert os.path.exists(marker)  # an actor did die
    check_folder(tmp_path / "shards", expected)


def test_corpus_paths_command_line_and_bad_input(cluster, model_dir, expected, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in zip(IDS[:5], TEXTS)))
    # the command line: corpus file in, shards out, on the cluster this process is connected to
    assert cli.main(["encode", model_dir, str(corpus), "--normalize", "--batch-size", "2", "--num-actors", "1",
                     "-o", str(tmp_path / "cli"), "--ray"]) == 0
    ids, embeddings = load_shards(tmp_path / "cli")
    assert ids.tolist() == IDS[:5]
    np.testing.assert_allclose(embeddings, expected[:5], rtol=0, atol=1e-6)
    assert cli.main(["encode", str(tmp_path / "no-model"), str(corpus), "--ray"]) == 2
    with pytest.raises(ValueError, match="does not exist"):
        mrd.encode(dataset(), str(tmp_path / "no-model"))
    with pytest.raises(ValueError, match="no column 'body'"):
        mrd.encode(dataset(), model_dir, text_column="body")
    with pytest.raises(ValueError, match="no corpus file"):
        mrd.encode(str(tmp_path / "missing.jsonl"), model_dir)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match="already holds shards"):
        mrd.write_shards(dataset(), tmp_path / "out")
    # a model folder the nodes cannot read (gone once the job runs): a clear error, and no
    # shard folder that looks complete
    moved = tmp_path / "model-copy"
    shutil.copytree(model_dir, moved)
    ds = mrd.encode(str(corpus), str(moved), batch_size=2, num_actors=1)
    shutil.rmtree(moved)
    with pytest.raises(Exception, match="not readable on node"):
        mrd.write_shards(ds, tmp_path / "failed")
    assert os.listdir(tmp_path / "failed") == []


def test_unreachable_address_fails_fast(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="cannot reach a Ray cluster"):
        mrd.connect(f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="host:port"):
        mrd.connect("nowhere")
