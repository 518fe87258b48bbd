"""mambaret.nn.MambaModel: gradients equal to transformers' MambaModel (its slow path, float64),
packed batches of mixed lengths across the scan backward's chunk boundaries, and checkpoints
that MambaEncoder, transformers and sentence-transformers read back with the same embeddings."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import mambaret as mr  # noqa: E402
from conftest import REPO_ROOT, assert_close_to_reference, build_hf_model, save_hf_model  # noqa: E402
from mambaret.nn import MambaModel, last_token_embeddings, offsets_from_lengths  # noqa: E402
from mambaret.nn import _kernels  # noqa: E402
from mambaret.nn._kernels import SCAN_CHUNK  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The references run thousands of tiny torch ops, for which waking a second thread costs more
    than the op (and much more on a busy machine); the C kernels' threads are tested explicitly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

# perturbed configurations: odd widths, expand 1-3, state 4-16, conv 2-4, dt_rank not a multiple
# of 8, biases on and off
CONFIGS = [
    dict(hidden_size=24, expand=2, state_size=16, conv_kernel=4, time_step_rank=3, use_bias=False, use_conv_bias=True),
    dict(hidden_size=19, expand=3, state_size=5, conv_kernel=2, time_step_rank=5, use_bias=True, use_conv_bias=False),
    dict(hidden_size=33, expand=1, state_size=4, conv_kernel=3, time_step_rank=7, use_bias=True, use_conv_bias=True),
    dict(hidden_size=16, expand=2, state_size=12, conv_kernel=4, time_step_rank=1, use_bias=False,
         use_conv_bias=False),
    dict(hidden_size=21, expand=3, state_size=8, conv_kernel=3, time_step_rank=11, use_bias=True, use_conv_bias=True,
         layer_norm_epsilon=1e-6),
    dict(hidden_size=40, expand=1, state_size=9, conv_kernel=2, time_step_rank=13, use_bias=False, use_conv_bias=True),
]


def rel_l2(ours, ref):
    ours, ref = ours.detach().double(), ref.detach().double()
    return float((ours - ref).norm() / ref.norm().clamp_min(1e-30))


def hf_pair(config: dict, seed: int, vocab_size: int = 64, layers: int = 2):
    hf = build_hf_model({**config, "vocab_size": vocab_size, "num_hidden_layers": layers}, seed=seed, perturb=0.1)
    ours = MambaModel(hf.config)
    ours.load_state_dict(hf.state_dict())
    return hf, ours


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_gradients_match_transformers(index, monkeypatch):
    """Every parameter's gradient and the input embeddings' against HF's slow path in float64,
    on a packed batch whose sequences cross chunk boundaries of the scan backward (a chunk of 8
    tokens here, so that HF's backward, quadratic in length, stays quick)."""
    monkeypatch.setattr(_kernels, "SCAN_CHUNK", 8)
    hf, ours = hf_pair(CONFIGS[index], seed=index)
    hf = hf.double()
    lengths = [1, 9, 17]
    d = hf.config.hidden_size
    gen = torch.Generator().manual_seed(100 + index)
    embeds = torch.randn(sum(lengths), d, generator=gen, dtype=torch.float64)
    target = torch.randn(sum(lengths), d, generator=gen, dtype=torch.float64)

    hf_embeds = embeds.clone().requires_grad_()
    loss = 0.0
    for start, length in zip(np.cumsum([0] + lengths[:-1]), lengths):
        rows = slice(int(start), int(start) + length)
        hidden = hf(inputs_embeds=hf_embeds[rows].unsqueeze(0), use_cache=False).last_hidden_state[0]
        loss = loss + (hidden * target[rows]).sum()
    loss.backward()

    our_embeds = embeds.float().requires_grad_()
    hidden = ours.forward_embeddings_packed(our_embeds, offsets_from_lengths(lengths))
    (hidden * target.float()).sum().backward()

    assert rel_l2(our_embeds.grad, hf_embeds.grad) < 1e-4, "input embeddings"
    theirs = dict(hf.named_parameters())
    for name, param in ours.named_parameters():
        if name == "embeddings.weight":
            continue  # not used: the input came as embeddings
        assert param.grad is not None, name
        assert rel_l2(param.grad, theirs[name].grad) < 1e-4, name


def test_padded_forward_and_embedding_gradient_match_transformers():
    """forward(input_ids, attention_mask) with right padding: real positions equal HF's run on
    each sequence alone, and the embedding table's gradient matches."""
    hf, ours = hf_pair(CONFIGS[0], seed=7)
    hf = hf.double()
    lengths = [5, 1, 12]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (3, 12), generator=gen)
    mask = (torch.arange(12) < torch.tensor(lengths).unsqueeze(1)).long()
    target = torch.randn(3, 12, 24, generator=gen)

    out = ours(ids, attention_mask=mask)
    assert out.shape == (3, 12, 24)
    (out * target).sum().backward()
    loss = 0.0
    for b, length in enumerate(lengths):
        hidden = hf(ids[b:b + 1, :length], use_cache=False).last_hidden_state[0]
        assert rel_l2(out[b, :length], hidden) < 1e-5
        assert float(out[b, length:].detach().abs().sum()) == 0.0
        loss = loss + (hidden * target[b, :length].double()).sum()
    loss.backward()
    assert rel_l2(ours.embeddings.weight.grad, hf.embeddings.weight.grad) < 1e-4
    assert rel_l2(ours.layers[1].mixer.A_log.grad, hf.layers[1].mixer.A_log.grad) < 1e-4
    # without a mask every row runs at full length
    full = ours(ids)
    assert rel_l2(full[2], hf(ids[2:3], use_cache=False).last_hidden_state[0]) < 1e-5


def test_left_padding_is_refused():
    _, ours = hf_pair(CONFIGS[0], seed=0)
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="right padding"):
        ours(ids, attention_mask=torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))


def test_long_packed_batches_match_the_float64_reference():
    """Mixed lengths 1 to 300 in one packed batch: our fp32 kernels against the same model in
    float64 (which runs the torch reference that the HF tests above vouch for)."""
    _, ours = hf_pair(dict(hidden_size=24, expand=2, state_size=8, conv_kernel=4, time_step_rank=3, use_bias=True),
                      seed=3, vocab_size=500)
    reference = MambaModel(ours.config).double()
    reference.load_state_dict(ours.state_dict())
    lengths = [300, 1, SCAN_CHUNK, SCAN_CHUNK + 1, 2 * SCAN_CHUNK + 1, 7, 2]
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 500, (sum(lengths),), generator=gen)
    target = torch.randn(sum(lengths), 24, generator=gen)
    offsets = offsets_from_lengths(lengths)

    out = ours.forward_packed(tokens, offsets)
    pooled = last_token_embeddings(out, offsets)
    ((out * target).sum() + pooled.square().sum()).backward()
    ref = reference.forward_packed(tokens, offsets)
    ref_pooled = last_token_embeddings(ref, offsets)
    ((ref * target.double()).sum() + ref_pooled.square().sum()).backward()

    assert rel_l2(out, ref) < 1e-5
    refs = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        assert rel_l2(param.grad, refs[name].grad) < 1e-4, name


def test_last_token_embeddings():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    assert last_token_embeddings(hidden, [3, 1]).tolist() == [[4.0, 5.0], [6.0, 7.0]]
    packed = torch.arange(10, dtype=torch.float32).view(5, 2)
    assert last_token_embeddings(packed, torch.tensor([0, 2, 5])).tolist() == [[2.0, 3.0], [8.0, 9.0]]
    with pytest.raises(ValueError):
        last_token_embeddings(hidden, [0, 1])
    with pytest.raises(ValueError):
        last_token_embeddings(packed, [0, 2, 2, 5])


# -- loading and saving --------------------------------------------------------------------------

TEXTS = ["hello world", "Mamba encoders read left to right, so the last token sees the whole text.", "x"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer_json):
    """A random HF checkpoint loaded into MambaModel, nudged by one optimizer step, then saved."""
    hf = build_hf_model(dict(hidden_size=16, num_hidden_layers=2, vocab_size=50280, state_size=4, expand=2,
                             use_bias=True), seed=4)
    source = save_hf_model(hf, tmp_path_factory.mktemp("source"))
    model = MambaModel.from_pretrained(source, tokenizer_path=str(tokenizer_json))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model(ids).square().mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p.grad.sign()
    folder = model.save_pretrained(str(tmp_path_factory.mktemp("saved")))
    return model, folder


def test_save_pretrained_writes_an_hf_folder(saved):
    model, folder = saved
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "tokenizer.json"]
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["model_type"] == "mamba" and config["vocab_size"] == 50280 and config["use_bias"] is True
    reloaded = MambaModel.from_pretrained(folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    assert reloaded.config == model.config


def test_saved_model_embeds_the_same_in_encoder_transformers_and_st(saved):
    from transformers import MambaModel as HFMambaModel

    model, folder = saved
    encoder = mr.MambaEncoder.from_pretrained(folder, threads=1)
    ids = encoder.tokenize(TEXTS)
    lengths = [len(x) for x in ids]
    with torch.no_grad():
        ours = last_token_embeddings(model.forward_packed(torch.tensor(sum(ids, [])), offsets_from_lengths(lengths)),
                                     offsets_from_lengths(lengths)).numpy()
    engine = encoder.encode(ids, add_eos=False, normalize_embeddings=False)
    assert_close_to_reference(engine, ours, 1e-5, "MambaEncoder")
    assert np.abs(engine - ours).max() < 1e-5 * max(1.0, np.abs(ours).max())
    hf = HFMambaModel.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = np.stack([hf(torch.tensor([x]), use_cache=False).last_hidden_state[0, -1].numpy() for x in ids])
    assert np.abs(theirs - ours).max() < 1e-5 * max(1.0, np.abs(ours).max())

    st = pytest.importorskip("sentence_transformers")
    exported = mr.export_sentence_transformers(encoder, os.path.join(folder + "-st"))
    st_model = st.SentenceTransformer(exported, device="cpu")
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    assert np.abs(st_model.encode(TEXTS, batch_size=len(TEXTS)) - unit).max() < 1e-5


def test_from_pretrained_reads_bf16_and_mamba_ssm_layouts(tmp_path):
    from safetensors.torch import save_file

    hf = build_hf_model(dict(hidden_size=16, num_hidden_layers=1, vocab_size=40, state_size=4), seed=9)
    bf16 = MambaModel.from_pretrained(save_hf_model(hf, tmp_path / "bf16", dtype="bfloat16"))
    for name, tensor in hf.state_dict().items():
        assert torch.equal(bf16.state_dict()[name], tensor.to(torch.bfloat16).float()), name
    # mamba_ssm: d_model / n_layer / ssm_cfg and backbone.embedding.weight, tied lm_head
    folder = tmp_path / "ssm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"d_model": 16, "n_layer": 1, "vocab_size": 40,
                                                    "ssm_cfg": {"d_state": 4}, "rms_norm": True}))
    state = {("backbone." + k).replace("embeddings", "embedding"): v for k, v in hf.state_dict().items()}
    state["lm_head.weight"] = hf.embeddings.weight.detach().clone()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    ssm = MambaModel.from_pretrained(str(folder))
    for name, tensor in hf.state_dict().items():
        assert torch.equal(ssm.state_dict()[name], tensor), name
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    assert rel_l2(ssm(ids), hf(ids).last_hidden_state) < 1e-5


def test_import_mambaret_does_not_import_torch():
    code = ("import sys, mambaret; assert 'torch' not in sys.modules, 'torch imported'; "
            "nn = mambaret.nn; assert 'torch' in sys.modules and nn.MambaModel")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(REPO_ROOT))
    # without torch, mambaret works and mambaret.nn says what to install
    code = ("import sys; sys.modules['torch'] = None; import mambaret\n"
            "try:\n    import mambaret.nn\nexcept ImportError as exc:\n    assert '.[train]' in str(exc), exc\n"
            "else:\n    raise AssertionError('mambaret.nn imported without torch')")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(REPO_ROOT))
