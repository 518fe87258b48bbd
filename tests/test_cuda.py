"""The CUDA engine on a GPU: parity with HF transformers (TF32 off), reduced precision against
float32, micro-batching, DLPack with torch (streams included), bad input, compute-sanitizer.
Everything here is skipped where mambaret.cuda_available() is False."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mambaret as mr
from mambaret.encoding.cuda import _load_cuda_module

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not mr.cuda_available(),
                                 reason=f"CUDA is not usable here: {_load_cuda_module()[1] or 'no GPU'}")]

# (id, MambaConfig kwargs): odd sizes on purpose (channels not a multiple of 32, K 2..4, N 4..16)
CONFIGS = [
    ("d64-n16", dict(hidden_size=64, num_hidden_layers=2, vocab_size=97, state_size=16, conv_kernel=4, expand=2)),
    ("d37-x3-bias", dict(hidden_size=37, num_hidden_layers=2, vocab_size=101, state_size=4, conv_kernel=3, expand=3,
                         use_bias=True, use_conv_bias=True)),
    ("d48-k2-rank5", dict(hidden_size=48, num_hidden_layers=3, vocab_size=80, state_size=8, conv_kernel=2, expand=2,
                          time_step_rank=5, use_conv_bias=False)),
]
LENGTHS = (1, 2, 9, 40, 77, 300)


@pytest.fixture(scope="module")
def torch_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch cannot see the GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _hf(cfg, path, seed):
    from conftest import build_hf_model, save_hf_model

    model = build_hf_model(cfg, seed=seed)
    save_hf_model(model, path)
    return model


def _hf_states_gpu(torch, model, ids):
    with torch.no_grad():
        out = model(torch.tensor([list(ids)], dtype=torch.long, device="cuda")).last_hidden_state[0]
    return out.float().cpu().numpy()


def _sequences(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


@pytest.mark.parametrize("name,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float32_matches_transformers_on_gpu(torch_gpu, tmp_path, name, cfg):
    from conftest import assert_close_to_reference

    model = _hf(cfg, tmp_path / name, seed=len(name)).cuda()
    enc = mr.MambaEncoder.from_pretrained(str(tmp_path / name), device="cuda", dtype="float32")
    seqs = _sequences(cfg["vocab_size"], LENGTHS)
    pooled = enc.encode(seqs)
    states = enc.encode(seqs, output_value="token_embeddings")
    for ids, emb, tokens in zip(seqs, pooled, states):
        ref = _hf_states_gpu(torch_gpu, model, ids)
        assert_close_to_reference(tokens, ref, 1e-5, f"{name} all states, length {len(ids)}")
        assert_close_to_reference(emb, ref[-1], 1e-5, f"{name} pooled, length {len(ids)}")


def test_gpu_float32_matches_cpu_engine(tmp_path):
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=5, hidden_size=96, num_hidden_layers=3, vocab_size=500)
    cpu = mr.MambaEncoder.from_pretrained(path, threads=2)
    gpu = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    seqs = _sequences(500, (3, 64, 65, 500, 1000, 7))
    a, b = cpu.encode(seqs), gpu.encode(seqs)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-5
    for pooling in ("mean", "all"):
        ref = cpu.model.forward(*_packed(seqs), pooling=pooling, threads=2)
        got = gpu.model.forward(*_packed(seqs), pooling=pooling)
        assert got.shape == ref.shape
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5, pooling


def test_gpu_exits_match_the_cpu_engine_with_and_without_a_head(tmp_path):
    """exit_layer through the CUDA path's API: the exit's own head (copied from the host model)
    or the final norm, across micro-batches, for every pooling; truncate_dim on torch output."""
    from safetensors.numpy import load_file, save_file

    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=6, hidden_size=64, num_hidden_layers=4, vocab_size=300)
    tensors = load_file(os.path.join(path, "model.safetensors"))
    tensors["exits.1.weight"] = (1 + 0.2 * np.random.default_rng(0).standard_normal(64)).astype(np.float32)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    cpu = mr.MambaEncoder.from_pretrained(path, threads=2, max_tokens=64)
    gpu = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32", max_tokens=64)
    seqs = _sequences(300, (3, 64, 65, 200, 7))
    for k in (1, 2, 4):
        a, b = cpu.encode(seqs, exit_layer=k), gpu.encode(seqs, exit_layer=k)
        assert np.linalg.norm(a - b) / np.linalg.norm(a) <= 1e-5, k
        for pooling in ("mean", "all"):
            ref = cpu.model.forward(*_packed(seqs), pooling=pooling, threads=2, exit_layer=k)
            got = gpu.model.forward(*_packed(seqs), pooling=pooling, exit_layer=k)
            assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5, (k, pooling)
    with pytest.raises(ValueError, match="exit_layer"):
        gpu.model.forward(*_packed(seqs), exit_layer=5)
    torch = pytest.importorskip("torch")
    cut = gpu.encode(seqs, convert_to="torch", truncate_dim=16, exit_layer=2, normalize_embeddings=True)
    ref = cpu.encode(seqs, truncate_dim=16, exit_layer=2, normalize_embeddings=True)
    assert np.abs(cut.cpu().numpy() - ref).max() <= 1e-5
    with pytest.raises(ValueError, match="truncate_dim"):
        gpu.encode(seqs, convert_to="dlpack", truncate_dim=16)


def _assert_same_embeddings(got, ref, rel=1e-6):
    """Equal up to the scan's rounding: where a sequence starts inside its scan piece depends on
    the batch order (the encoder sorts longest first, a raw forward keeps the input order)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
    assert err <= rel, err


def _packed(seqs):
    batch = mr.PackedBatch.from_lists(seqs)
    return batch.tokens, batch.offsets


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_embeddings_are_close_to_float32(tmp_path, dtype):
    cfg = dict(hidden_size=128, num_hidden_layers=4, vocab_size=300, state_size=16, conv_kernel=4, expand=2)
    _hf(cfg, tmp_path / "m", seed=7)
    ref = mr.MambaEncoder.from_pretrained(str(tmp_path / "m"), device="cuda", dtype="float32")
    low = mr.MambaEncoder.from_pretrained(str(tmp_path / "m"), device="cuda", dtype=dtype)
    seqs = _sequences(300, (5, 50, 129, 700, 2000), seed=3)
    a = ref.encode(seqs, normalize_embeddings=True)
    b = low.encode(seqs, normalize_embeddings=True)
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() >= 0.999, cosine


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_micro_batches_match_one_pass(tmp_path, dtype):
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=9, hidden_size=64, num_hidden_layers=2, vocab_size=200,
                              state_size=8, conv_kernel=4)
    enc = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype=dtype)
    seqs = _sequences(200, (1, 1200, 3, 499, 500, 501, 17, 1000, 2), seed=4)
    tokens, offsets = _packed(seqs)
    whole = enc.model.forward(tokens, offsets, max_tokens=1 << 16, pooling="all")
    tol = 1e-5 if dtype == "float32" else 2e-2
    for max_tokens in (1, 2, 3, 7, 64, 500):
        part = enc.model.forward(tokens, offsets, max_tokens=max_tokens, pooling="all")
        err = np.linalg.norm(part - whole) / np.linalg.norm(whole)
        assert err <= tol, (max_tokens, err)
        pooled = enc.model.forward(tokens, offsets, max_tokens=max_tokens)
        assert np.linalg.norm(pooled - whole[offsets[1:] - 1]) / np.linalg.norm(pooled) <= tol


def test_dlpack_round_trip_with_torch_streams(torch_gpu, tmp_path):
    torch = torch_gpu
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=2, hidden_size=64, num_hidden_layers=2, vocab_size=100)
    enc = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    seqs = _sequences(100, (10, 300, 40, 2000, 5), seed=6)
    host = enc.encode(seqs)

    tensor = enc.encode(seqs, convert_to="dlpack")
    assert tensor.__dlpack_device__() == (2, 0) and tensor.shape == host.shape
    _assert_same_embeddings(tensor.numpy(), host)
    t = torch.from_dlpack(tensor)
    assert t.is_cuda and t.data_ptr() == torch.from_dlpack(tensor).data_ptr()  # zero-copy views
    np.testing.assert_array_equal(t.cpu().numpy(), tensor.numpy())

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # our kernels queue on `side`; torch reads after them
        on_side = enc.encode(seqs, convert_to_tensor=True, normalize_embeddings=True)
        total = (on_side * 2).sum(dim=1)
    side.synchronize()
    np.testing.assert_allclose(on_side.cpu().numpy(), host / np.linalg.norm(host, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(total.cpu().numpy(), 2 * on_side.cpu().numpy().sum(axis=1), rtol=1e-5)

    # token ids from a GPU tensor written on another stream; int64 and int32
    tokens, offsets = _packed(seqs)
    other = torch.cuda.Stream()
    with torch.cuda.stream(other):
        ids64 = torch.from_numpy(tokens.astype(np.int64)).to("cuda", non_blocking=True) * 1
    other.synchronize()  # torch's side of the handshake covers its current stream only
    got = enc.model.forward(ids64, offsets, stream=torch.cuda.current_stream().cuda_stream)
    _assert_same_embeddings(got, host)
    out = enc.model.forward(ids64.to(torch.int32), offsets, convert_to="dlpack")
    _assert_same_embeddings(torch.from_dlpack(out).cpu().numpy(), host)


def test_bad_input_is_an_exception(torch_gpu, tmp_path):
    torch = torch_gpu
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=1, hidden_size=32, num_hidden_layers=1, vocab_size=50)
    enc = mr.MambaEncoder.from_pretrained(path, device="cuda")
    offsets = np.array([0, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="device"):
        enc.model.forward(torch.tensor([1, 2, 3], dtype=torch.int32), offsets)  # a CPU tensor through DLPack
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="device"):
            enc.model.forward(torch.tensor([1, 2, 3], dtype=torch.int32, device="cuda:1"), offsets)
    with pytest.raises(ValueError, match="vocabulary"):
        enc.model.forward(torch.tensor([1, 50, 3], device="cuda"), offsets)
    with pytest.raises(ValueError, match="vocabulary"):
        enc.model.forward(np.array([1, -1, 3], dtype=np.int32), offsets)
    with pytest.raises(ValueError, match="offsets"):
        enc.model.forward(np.array([1, 2, 3], dtype=np.int32), np.array([0, 4], dtype=np.int64))
    with pytest.raises(ValueError, match="dtype"):
        mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="int8")
    with pytest.raises(TypeError, match="threads"):  # the GPU takes no threads: refused, not ignored
        enc.model.forward(np.array([1, 2, 3], dtype=np.int32), offsets, threads=2)
    assert enc.encode([[1, 2, 3]]).shape == (1, 32)  # still healthy


def test_allocation_failure_is_memory_error(torch_gpu, tmp_path):
    torch = torch_gpu
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=1, hidden_size=256, num_hidden_layers=1, vocab_size=50)
    enc = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    tokens = np.ones(1 << 18, dtype=np.int32)
    offsets = np.array([0, tokens.size], dtype=np.int64)
    need = enc.model.workspace_bytes(tokens.size)
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(free - need // 4, 0), dtype=torch.uint8, device="cuda")  # leave too little
    try:
        with pytest.raises(MemoryError):
            enc.model.forward(tokens, offsets, max_tokens=tokens.size)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert enc.model.forward(tokens[:100], np.array([0, 100], dtype=np.int64)).shape == (1, 256)


def _sanitizer():
    return shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer", "/usr/local/cuda/compute-sanitizer/compute-sanitizer")
         if os.path.exists(p)), None)


@pytest.mark.skipif(_sanitizer() is None, reason="compute-sanitizer is not on PATH")
def test_compute_sanitizer_memcheck_is_clean(tmp_path):
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=4, hidden_size=40, num_hidden_layers=2, vocab_size=60,
                              state_size=4, conv_kernel=3)
    script = textwrap.dedent(f"""
        import numpy as np, mambaret as mr
        for dtype in ("float32", "bfloat16"):
            enc = mr.MambaEncoder.from_pretrained({path!r}, device="cuda", dtype=dtype, max_tokens=37)
            rng = np.random.default_rng(0)
            seqs = [rng.integers(0, 60, n).tolist() for n in (1, 2, 5, 36, 37, 38, 100)]
            enc.encode(seqs)
            enc.encode(seqs, output_value="token_embeddings")
            enc.model.forward(*(lambda b: (b.tokens, b.offsets))(mr.PackedBatch.from_lists(seqs)), pooling="mean",
                              normalize=True)
            t = enc.encode(seqs, convert_to="dlpack"); t.numpy(); del t
        print("done")
    """)
    result = subprocess.run([_sanitizer(), "--tool", "memcheck", "--error-exitcode", "99", "--leak-check", "no",
                             sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "done" in result.stdout, result.stdout[-4000:] + result.stderr[-4000:]


def _write(tmp_path, name, **cfg):
    from mambaret.arch.random_model import write_random_model

    return write_random_model(str(tmp_path / name), **cfg)


def test_stream_handshake_with_delayed_producer_and_consumer(torch_gpu, tmp_path):
    """No synchronisation between the streams: only the DLPack handshake orders the work. A
    producer delayed by a sleeping kernel writes the ids our forward reads; our result, queued
    behind a sleep, is read by torch on another stream."""
    torch = torch_gpu
    path = _write(tmp_path, "m", seed=3, hidden_size=64, num_hidden_layers=2, vocab_size=100)
    enc = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    seqs = _sequences(100, (50, 300, 7, 1000), seed=8)
    tokens, offsets = _packed(seqs)
    ref = enc.model.forward(tokens, offsets)
    cycles = 200_000_000  # ~0.1 s on a current GPU: far longer than a copy or a forward

    producer, consumer = torch.cuda.Stream(), torch.cuda.Stream()
    for _ in range(3):
        with torch.cuda.stream(producer):
            ids = torch.zeros(tokens.size, dtype=torch.int64, device="cuda")
            torch.cuda._sleep(cycles)
            ids.copy_(torch.from_numpy(tokens.astype(np.int64)).cuda())
            got = enc.model.forward(ids, offsets, stream=consumer.cuda_stream)  # consumer waits for producer
        _assert_same_embeddings(got, ref)

        with torch.cuda.stream(producer):
            torch.cuda._sleep(cycles)
            out = enc.model.forward(tokens, offsets, convert_to="dlpack", stream=producer.cuda_stream)
        with torch.cuda.stream(consumer):
            doubled = torch.from_dlpack(out) * 2  # consumer's stream made to wait for ours
        consumer.synchronize()
        _assert_same_embeddings(doubled.cpu().numpy(), 2 * ref)


def test_mean_pooling_across_micro_batches_matches_the_cpu_engine(tmp_path):
    path = _write(tmp_path, "m", seed=7, hidden_size=48, num_hidden_layers=2, vocab_size=120, state_size=8)
    cpu = mr.MambaEncoder.from_pretrained(path, threads=2)
    gpu = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    seqs = _sequences(120, (1, 700, 2, 90, 333), seed=5)
    tokens, offsets = _packed(seqs)
    ref = cpu.model.forward(tokens, offsets, pooling="mean", threads=2)
    for max_tokens in (7, 64, 1 << 16):
        got = gpu.model.forward(tokens, offsets, pooling="mean", max_tokens=max_tokens)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5, max_tokens


def test_many_scan_pieces_in_one_micro_batch(tmp_path):
    """More than 240 sequences in one micro-batch: more scan pieces than one grid row holds."""
    path = _write(tmp_path, "m", seed=8, hidden_size=40, num_hidden_layers=2, vocab_size=90, state_size=4)
    cpu = mr.MambaEncoder.from_pretrained(path, threads=2)
    gpu = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    rng = np.random.default_rng(1)
    seqs = _sequences(90, rng.integers(1, 40, 1500).tolist(), seed=9)
    tokens, offsets = _packed(seqs)
    ref = cpu.model.forward(tokens, offsets, pooling="all", threads=2)
    got = gpu.model.forward(tokens, offsets, pooling="all", max_tokens=1 << 16)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5


@pytest.mark.parametrize("name,cfg", [
    ("d1024", dict(hidden_size=1024, num_hidden_layers=1, vocab_size=64, state_size=16, conv_kernel=4)),
    ("n32", dict(hidden_size=64, num_hidden_layers=2, vocab_size=64, state_size=32, conv_kernel=4)),
    ("n64-k1", dict(hidden_size=48, num_hidden_layers=2, vocab_size=64, state_size=64, conv_kernel=1)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_wide_models_large_states_and_k1_match_transformers(torch_gpu, tmp_path, name, cfg):
    from conftest import assert_close_to_reference

    model = _hf(dict(cfg, expand=2), tmp_path / name, seed=3).cuda()
    enc = mr.MambaEncoder.from_pretrained(str(tmp_path / name), device="cuda", dtype="float32")
    for ids in _sequences(cfg["vocab_size"], (1, 77, 600), seed=4):
        ref = _hf_states_gpu(torch_gpu, model, ids)
        assert_close_to_reference(enc.encode([ids], output_value="token_embeddings")[0], ref, 1e-5, name)


def _small_gpu_encoder(tmp_path, seed=3, hidden_size=64, **kwargs):
    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / f"m{seed}"), seed=seed, hidden_size=hidden_size, num_hidden_layers=2,
                              vocab_size=100)
    return mr.MambaEncoder.from_pretrained(path, dtype="float32", **kwargs)


def test_single_input_through_dlpack_is_one_dimensional(torch_gpu, tmp_path):
    torch = torch_gpu
    enc = _small_gpu_encoder(tmp_path, device="cuda")
    host = enc.encode([[1, 2, 3, 4]])
    one = enc.encode([1, 2, 3, 4], convert_to="dlpack")
    assert one.shape == (64,) and one.__dlpack_device__() == (2, 0)  # [d], as on the CPU
    np.testing.assert_array_equal(torch.from_dlpack(one).cpu().numpy(), host[0])
    np.testing.assert_array_equal(one.numpy(), host[0])
    assert enc.encode([1, 2, 3, 4], convert_to_tensor=True).shape == (64,)


def test_second_device_records_on_its_own_stream(torch_gpu, tmp_path):
    torch = torch_gpu
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    enc = _small_gpu_encoder(tmp_path, device="cuda:1")
    seqs = _sequences(100, (10, 300, 40), seed=4)
    host = enc.encode(seqs)
    with torch.cuda.device(0):  # the current device is not the model's
        out = enc.model.forward(*_packed(seqs), convert_to="dlpack")  # default stream: cuda:1's, not cuda:0's
        t = torch.from_dlpack(out)
        assert t.device == torch.device("cuda", 1)
        _assert_same_embeddings(t.cpu().numpy(), host)
        capsule = out.__dlpack__(stream=1)  # the consumer's legacy stream, on the tensor's device
        assert capsule is not None
        _assert_same_embeddings(enc.encode(seqs, convert_to="dlpack").numpy(), host)


def test_per_thread_streams_from_two_threads_share_one_model(torch_gpu, tmp_path):
    import threading

    enc = _small_gpu_encoder(tmp_path, hidden_size=256, device="cuda")
    seqs = _sequences(100, (3000, 2500, 700, 4000), seed=8)
    tokens, offsets = _packed(seqs)
    expect = enc.model.forward(tokens, offsets)
    results, errors = {}, []

    def work(k):
        try:  # stream 2: each host thread's own per-thread default stream, under one stream value
            outs = [enc.model.forward(tokens, offsets, convert_to="dlpack", stream=2) for _ in range(4)]
            results[k] = [o.numpy() for o in outs]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for k in range(2):
        for got in results[k]:
            np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def test_failed_weight_upload_does_not_poison_the_next_forward(torch_gpu, tmp_path):
    torch = torch_gpu
    from mambaret.encoding.cuda_backend import upload
    from mambaret.arch.random_model import write_random_model

    enc = _small_gpu_encoder(tmp_path, device="cuda")
    seqs = _sequences(100, (10, 50), seed=2)
    expect = enc.encode(seqs)
    big = write_random_model(str(tmp_path / "big"), seed=1, hidden_size=1024, num_hidden_layers=4, vocab_size=50000)
    cpu_big = mr.MambaEncoder.from_pretrained(big, threads=1)
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(free - (64 << 20), 0), dtype=torch.uint8, device="cuda")  # the weights cannot fit
    try:
        with pytest.raises(MemoryError):
            upload(cpu_big.model, "cuda", "float32")
    finally:
        del hog
        torch.cuda.empty_cache()
    np.testing.assert_array_equal(enc.encode(seqs), expect)  # the failed cudaMalloc is not blamed on a kernel


def test_freeing_a_result_lets_other_threads_run(torch_gpu, tmp_path):
    import threading
    import time

    torch = torch_gpu
    enc = _small_gpu_encoder(tmp_path, device="cuda")
    tokens, offsets = _packed(_sequences(100, (20,), seed=1))
    enc.model.forward(tokens, offsets)  # the workspace exists: nothing below allocates (which could wait)
    out = enc.model.empty(1)
    torch.cuda.synchronize()
    torch.cuda._sleep(1 << 31)  # about a second of device time on the legacy default stream
    enc.model.forward(tokens, offsets, convert_to="dlpack", out=out, stream=1)  # queued behind it
    ticks, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    while not ticks:
        time.sleep(0.001)
    before = len(ticks)
    del out  # cudaFree waits for the sleeping device: without the GIL, the ticker keeps going
    during = len(ticks) - before
    stop.set()
    th.join()
    torch.cuda.synchronize()
    assert during >= 10, f"the ticker ran {during} times while the result was freed"


# Mamba-2 on the GPU: heads of 16 and 64 channels (a warp's 32 lanes half used, then two blocks
# per head), one and two groups, a finite time_step_limit, micro-batches carrying the state
MAMBA2_CONFIGS = [
    ("m2-g1-p16", dict(hidden_size=32, num_hidden_layers=2, vocab_size=97, num_heads=4, head_dim=16, n_groups=1,
                       state_size=16, conv_kernel=4, expand=2)),
    ("m2-g2-p64-limit", dict(hidden_size=64, num_hidden_layers=2, vocab_size=90, num_heads=2, head_dim=64,
                             n_groups=2, state_size=128, conv_kernel=3, expand=2, use_bias=True,
                             time_step_limit=(0.0, 0.3))),
]


@pytest.mark.parametrize("name,cfg", MAMBA2_CONFIGS, ids=[c[0] for c in MAMBA2_CONFIGS])
def test_mamba2_float32_matches_the_cpu_engine_across_micro_batches(tmp_path, name, cfg):
    from conftest import build_hf_model, save_hf_model

    path = save_hf_model(build_hf_model(cfg, seed=len(name), family="mamba2"), tmp_path / name)
    cpu = mr.MambaEncoder.from_pretrained(path, threads=2)
    gpu = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32")
    seqs = _sequences(cfg["vocab_size"], (1, 2, 9, 40, 77, 300, 1200), seed=2)
    tokens, offsets = _packed(seqs)
    ref = cpu.model.forward(tokens, offsets, pooling="all", threads=2)
    for max_tokens in (64, 500, 1 << 16):
        got = gpu.model.forward(tokens, offsets, pooling="all", max_tokens=max_tokens)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5, (name, max_tokens)
    pooled = gpu.encode(seqs)
    assert np.linalg.norm(pooled - cpu.encode(seqs)) / np.linalg.norm(pooled) <= 1e-5


def test_mamba2_bfloat16_is_close_to_float32(tmp_path):
    from conftest import build_hf_model, save_hf_model

    path = save_hf_model(build_hf_model(MAMBA2_CONFIGS[1][1], seed=3, family="mamba2"), tmp_path / "m")
    a = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="float32").encode(
        _sequences(90, (5, 50, 700), seed=3), normalize_embeddings=True)
    b = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype="bfloat16").encode(
        _sequences(90, (5, 50, 700), seed=3), normalize_embeddings=True)
    assert np.sum(a * b, axis=1).min() >= 0.999
