"""Embedding shards on disk and indexes built from them (our FlatIndex and FAISS), with recall."""
import json
import os

import numpy as np
import pytest

import mambaret as mr
from mambaret.search.build import recall_at_k
from mambaret.encoding.shards import MANIFEST, ShardWriter, iter_embedding_shards, load_shards

pytest.importorskip("pyarrow")


def vectors(n=2000, dim=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_folder(folder, x, ids, rows_per_shard=300, chunk=170):
    with ShardWriter(folder, rows_per_shard=rows_per_shard) as writer:
        for start in range(0, len(x), chunk):  # chunks that do not line up with shards
            writer.write(ids[start:start + chunk], x[start:start + chunk])
    return folder


def test_shards_round_trip_in_order(tmp_path):
    x = vectors(1000)
    ids = [f"d{i}" for i in range(1000)]
    write_folder(tmp_path / "s", x, ids)
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["rows"] == 1000 and [s["rows"] for s in manifest["shards"]] == [300, 300, 300, 100]
    got_ids, got = load_shards(tmp_path / "s")
    assert got_ids.tolist() == ids and np.array_equal(got, x)
    assert not [n for n in os.listdir(tmp_path / "s") if ".tmp" in n]


def test_shard_folder_errors(tmp_path):
    x = vectors(400)
    folder = write_folder(tmp_path / "s", x, list(range(400)))
    with pytest.raises(ValueError, match="already holds shards"):
        ShardWriter(folder)
    # a corrupt shard: named in the error
    shard = folder / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match="part-00001.parquet: unreadable shard"):
        load_shards(folder)
    # a failed writer leaves no manifest, so the folder never looks complete
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "partial", rows_per_shard=100) as writer:
            writer.write(list(range(250)), x[:250])
            raise RuntimeError("crash")
    assert not (tmp_path / "partial" / MANIFEST).exists()
    with pytest.raises(ValueError, match="did not finish"):
        load_shards(tmp_path / "partial")
    # a manifest that disagrees with its shards
    folder2 = write_folder(tmp_path / "t", x, list(range(400)))
    manifest = json.loads((folder2 / MANIFEST).read_text())
    manifest["shards"][0]["rows"] += 1
    (folder2 / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="the manifest says"):
        load_shards(folder2)
    with pytest.raises(ValueError, match="no such file"):
        list(iter_embedding_shards(str(tmp_path / "missing.npy.x")))


def test_flat_index_from_shards_memory_mapped(tmp_path):
    x = vectors(2000)
    ids = [f"d{i}" for i in range(2000)]
    folder = write_folder(tmp_path / "s", x, ids)
    built = mr.build_index(folder, "flat", output=tmp_path / "vectors.npy", n_queries=50)
    assert built.recall == 1.0 and built.ntotal == 2000 and built.dim == 16
    assert isinstance(built.index._mapped, np.memmap)
    reference = mr.FlatIndex(16)
    reference.add(x, ids=ids)
    q = vectors(5, seed=1)
    s1, i1 = built.search(q, 10)
    s2, i2 = reference.search(q, 10)
    assert (i1 == i2).all() and np.array_equal(s1, s2)
    # a list of .npy files as shards
    np.save(tmp_path / "a.npy", x[:700])
    np.save(tmp_path / "b.npy", x[700:])
    built = mr.build_index([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")], "flat", n_queries=20)
    assert (np.array(ids, dtype=object)[built.search(q, 10)[1]] == i2).all()


def test_faiss_kinds_report_recall(tmp_path):
    pytest.importorskip("faiss")
    x = vectors(2000)
    ids = np.arange(2000) + 10_000
    exhaustive = mr.build_index(x, "ivf_flat", ids=ids, nlist=8, nprobe=8, n_queries=100, threads=1)
    assert exhaustive.recall == 1.0  # every list probed: exact
    scores, found = exhaustive.search(x[:3], 10)
    assert found[:, 0].tolist() == [10_000, 10_001, 10_002]
    partial = mr.build_index(x, "ivf_flat", nlist=16, nprobe=1, n_queries=100, threads=1)
    assert 0.0 < partial.recall < 1.0 and partial.params == {"nlist": 16, "nprobe": 1}
    pq = mr.build_index(x, "ivf_pq", nlist=4, nprobe=4, m=4, nbits=4, n_queries=100, threads=1)
    assert 0.1 < pq.recall < 1.0 and pq.params["m"] == 4
    hnsw = mr.build_index(x, "hnsw", M=8, efConstruction=40, efSearch=64, n_queries=100, threads=1)
    assert hnsw.recall >= 0.9 and "recall@10" in hnsw.summary()


def test_build_index_errors():
    x = vectors(500)
    with pytest.raises(ValueError, match="kind must be"):
        mr.build_index(x, "lsh")
    with pytest.raises(ValueError, match="must divide"):
        mr.build_index(x, "ivf_pq", nlist=2, m=5)
    with pytest.raises(ValueError, match="training vectors"):
        mr.build_index(x, "ivf_pq", nlist=2, m=4, nbits=10)
    with pytest.raises(ValueError, match="output="):
        mr.build_index(x, "hnsw", output="x.npy")


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 2, 1], [4, -1, 9]]), exact, 3) == pytest.approx(4 / 6)
