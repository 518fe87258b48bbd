"""MambaModel: a Mamba-1, Mamba-2 or FalconMamba backbone as a torch.nn.Module, under transformers'
parameter names (MambaModel, Mamba2Model, FalconMambaModel)."""
from __future__ import annotations

import json
import math
import os
import shutil

import torch
import torch.nn.functional as F
from torch import nn

from .._atomic import give_default_mode
from ..arch.config import MambaDims, parse_config, read_config, transformers_config
from ..arch.exits import check_exit_layer, trained_exits
from ..arch.weights import core_tensor, exit_head_layer, iter_weights
from .functional import check_offsets, conv_silu, selective_scan, ssd_scan


def offsets_from_lengths(lengths) -> torch.Tensor:
    """[S] sequence lengths -> [S + 1] int64 offsets."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64).reshape(-1)
    return F.pad(torch.cumsum(lengths, 0), (1, 0))


def last_token_embeddings(hidden: torch.Tensor, lengths_or_offsets) -> torch.Tensor:
    """Each sequence's last-token hidden state (the retriever's pooling).

    hidden [B, L, d] with lengths [B] (right padding), or packed hidden [T, d] with offsets [B + 1].
    """
    index = torch.as_tensor(lengths_or_offsets, dtype=torch.int64, device=hidden.device).reshape(-1)
    if hidden.dim() == 3:
        if index.numel() != hidden.shape[0]:
            raise ValueError(f"{hidden.shape[0]} sequences but {index.numel()} lengths")
        if bool((index < 1).any()) or bool((index > hidden.shape[1]).any()):
            raise ValueError("every length must lie in 1..L")
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index - 1]
    if hidden.dim() == 2:
        if index.numel() < 2 or int(index[0]) != 0 or int(index[-1]) != hidden.shape[0]:
            raise ValueError("packed hidden states need offsets [B + 1] running from 0 to T")
        if bool((index[1:] <= index[:-1]).any()):
            raise ValueError("every packed sequence must hold at least one token")
        return hidden[index[1:] - 1]
    raise ValueError(f"hidden must be [B, L, d] or [T, d], got shape {tuple(hidden.shape)}")


class MambaRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype)


def weightless_rmsnorm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class MambaMixer(nn.Module):
    """Mamba-1's mixer; FalconMamba's (falcon=True) normalises dt, B and C without weights."""

    def __init__(self, dims: MambaDims):
        super().__init__()
        self.mixer_rms_eps = dims.mixer_rms_eps if dims.arch == "falcon_mamba" else None
        d, E, N = dims.hidden_size, dims.intermediate_size, dims.state_size
        K, R = dims.conv_kernel, dims.time_step_rank
        self.intermediate_size, self.state_size, self.time_step_rank = E, N, R
        self.in_proj = nn.Linear(d, 2 * E, bias=dims.use_bias)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=dims.use_conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N).contiguous())
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d, bias=dims.use_bias)
        with torch.no_grad():  # Mamba's time-step initialisation: softplus(bias) in [1e-3, 1e-1]
            dt = torch.exp(torch.rand(E) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward_packed(self, hidden: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        E, N, R = self.intermediate_size, self.state_size, self.time_step_rank
        xz = self.in_proj(hidden)
        x, z = xz.split([E, E], dim=-1)  # one backward cat; two slices would each zero-fill a [T, 2E] gradient
        x = conv_silu(x, self.conv1d.weight.view(E, -1), self.conv1d.bias, offsets)
        time_step, B, C = self.x_proj(x).split([R, N, N], dim=-1)
        if self.mixer_rms_eps is not None:
            time_step, B, C = (weightless_rmsnorm(t, self.mixer_rms_eps) for t in (time_step, B, C))
        dt = F.linear(time_step, self.dt_proj.weight)  # the bias is added inside the scan
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, self.dt_proj.bias, A, B, C, self.D, z, offsets)
        return self.out_proj(y)


class GatedRMSNorm(nn.Module):
    """Mamba-2's norm: y * silu(z), RMS-normalised over each of `groups` groups, times the weight."""

    def __init__(self, size: int, groups: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.groups, self.eps = groups, eps

    def forward(self, y, z):
        gated = (y * F.silu(z)).view(-1, self.groups, y.shape[-1] // self.groups)
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.view(y.shape)


class Mamba2Mixer(nn.Module):
    """Mamba-2's mixer: [z | xBC | dt] = in_proj(x); conv + SiLU over xBC; the SSD scan per head;
    the gated RMSNorm over groups; out_proj."""

    def __init__(self, dims: MambaDims):
        super().__init__()
        d, E, N, K = dims.hidden_size, dims.intermediate_size, dims.state_size, dims.conv_kernel
        H, G = dims.num_heads, dims.n_groups
        self.intermediate_size, self.state_size, self.num_heads, self.n_groups = E, N, H, G
        self.conv_dim = E + 2 * G * N
        self.time_step_limit = tuple(dims.time_step_limit)
        self.in_proj = nn.Linear(d, E + self.conv_dim + H, bias=dims.use_bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, K, groups=self.conv_dim, padding=K - 1,
                                bias=dims.use_conv_bias)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, H + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(E, G, dims.layer_norm_epsilon)
        self.out_proj = nn.Linear(E, d, bias=dims.use_bias)
        with torch.no_grad():  # Mamba-2's time-step initialisation: softplus(dt_bias) in [1e-3, 1e-1]
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward_packed(self, hidden: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        E, N, H, G = self.intermediate_size, self.state_size, self.num_heads, self.n_groups
        z, xbc, dt = self.in_proj(hidden).split([E, self.conv_dim, H], dim=-1)
        xbc = conv_silu(xbc, self.conv1d.weight.view(self.conv_dim, -1), self.conv1d.bias, offsets)
        x, B, C = xbc.split([E, G * N, G * N], dim=-1)
        A = -torch.exp(self.A_log.float())
        y = ssd_scan(x, dt, self.dt_bias, A, B, C, self.D, offsets, H, G, self.time_step_limit)
        return self.out_proj(self.norm(y, z))


class MambaBlock(nn.Module):
    def __init__(self, dims: MambaDims):
        super().__init__()
        self.norm = MambaRMSNorm(dims.hidden_size, dims.layer_norm_epsilon)
        self.mixer = Mamba2Mixer(dims) if dims.arch == "mamba2" else MambaMixer(dims)

    def forward_packed(self, hidden, offsets):
        return hidden + self.mixer.forward_packed(self.norm(hidden), offsets)


def _as_float32_tensor(tensor) -> torch.Tensor:
    """A checkpoint tensor (float32, float16, or bfloat16 bits) as a float32 torch tensor."""
    array = tensor.array
    if tensor.bfloat16:
        return torch.from_numpy(array.astype("int32") << 16).view(torch.float32)
    return torch.from_numpy(array.astype("float32", copy=True))


def _as_dims(config) -> MambaDims:
    if isinstance(config, MambaDims):
        return config
    if isinstance(config, dict):
        return parse_config(config, where="config")
    to_dict = getattr(config, "to_dict", None)  # a transformers MambaConfig
    if to_dict is not None:
        return parse_config(to_dict(), where="config")
    raise TypeError(f"config must be a MambaDims, a config dict or a MambaConfig, got {type(config).__name__}")


class MambaModel(nn.Module):
    """A Mamba backbone whose parameters are named like transformers' model of its architecture
    (`MambaModel`, `Mamba2Model` or `FalconMambaModel`, from the config's model_type).

    forward(input_ids [B, L], attention_mask=None) -> final-norm hidden states [B, L, d]
    forward_packed(tokens [T], offsets [B + 1]) -> [T, d]

    Layer exits (mambaret.arch.exits) live here, over `layers` and `norm_f` alone, so any
    architecture's blocks get them: exit_layer=k runs blocks 1..k and norms through exit k's own
    head (`exits.{k}.weight`, made by add_exit_heads or read from a checkpoint) or else norm_f.
    """

    def __init__(self, config):
        super().__init__()
        self.config = _as_dims(config)
        dims = self.config
        self.embeddings = nn.Embedding(dims.vocab_size, dims.hidden_size)
        self.layers = nn.ModuleList(MambaBlock(dims) for _ in range(dims.num_hidden_layers))
        self.norm_f = MambaRMSNorm(dims.hidden_size, dims.layer_norm_epsilon)
        self.exits = nn.ModuleDict()  # exit heads by layer number (str), none by default
        self.tokenizer_path: str | None = None  # tokenizer.json to copy on save_pretrained
        # what the model was trained for, written to config.json (None: not listed)
        self.matryoshka_dims: list[int] | None = None
        self.exit_layers: list[int] | None = None

    # --------------------------------------------------------------------------------------
    # layer exits

    def add_exit_heads(self, layers) -> None:
        """Gives each exit in `layers` (1..n_layer-1) its own gain vector, starting as norm_f's."""
        n = self.config.num_hidden_layers
        for layer in layers:
            if check_exit_layer(layer, n) == n:
                raise ValueError(f"exit {n} is the final norm (norm_f.weight); exit heads belong to layers 1..{n - 1}")
            if str(layer) not in self.exits:
                head = MambaRMSNorm(self.config.hidden_size, self.config.layer_norm_epsilon)
                with torch.no_grad():
                    head.weight.copy_(self.norm_f.weight)
                self.exits[str(layer)] = head.to(self.norm_f.weight.device)

    def exit_norm(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Block `layer`'s output through exit `layer`'s norm (its own head, else norm_f)."""
        head = self.exits[str(layer)] if str(layer) in self.exits else self.norm_f
        return head(hidden)

    def layer_states_packed(self, tokens: torch.Tensor, offsets: torch.Tensor, layers) -> dict[int, torch.Tensor]:
        """{k: block k's output [T, d]} (before any norm) for each k in `layers`, from one pass that
        stops at the deepest."""
        n = self.config.num_hidden_layers
        wanted = sorted({check_exit_layer(k, n) for k in layers})
        if not wanted:
            return {}
        offsets = check_offsets(torch.as_tensor(offsets), tokens.shape[0])
        hidden, out = self.embeddings(tokens), {}
        for k, layer in enumerate(self.layers[:wanted[-1]], start=1):
            hidden = layer.forward_packed(hidden, offsets)
            if k in wanted:
                out[k] = hidden
        return out

    # --------------------------------------------------------------------------------------
    # loading and saving

    @classmethod
    def from_pretrained(cls, model_dir: str, *, tokenizer_path: str | None = None) -> "MambaModel":
        """Reads every layout MambaEncoder reads (HF or mamba_ssm config; safetensors single or
        sharded, or pytorch_model.bin; fp32, fp16 or bf16 weights, loaded as float32); "default"
        is the packaged default model (mambaret.DEFAULT_MODEL) unless a path of that name exists."""
        from ..arch.paths import resolve_model_path

        model_dir = resolve_model_path(model_dir)
        dims = read_config(model_dir)
        state, heads = {}, {}
        for name, tensor in iter_weights(model_dir):
            target = core_tensor(name, dims.arch)
            if target is None:
                layer = exit_head_layer(name)
                if layer is not None:
                    if not 1 <= layer < dims.num_hidden_layers:
                        raise ValueError(f"{model_dir}: tensor '{name}': exit heads belong to layers "
                                         f"1..{dims.num_hidden_layers - 1}")
                    if tuple(tensor.array.shape) != (dims.hidden_size,):
                        raise ValueError(f"{model_dir}: tensor '{name}' has shape {tuple(tensor.array.shape)}, "
                                         f"expected ({dims.hidden_size},)")
                    heads[layer] = _as_float32_tensor(tensor)
                continue
            bare = name[len("backbone."):] if name.startswith("backbone.") else name
            if bare == "embedding.weight":
                bare = "embeddings.weight"
            state[bare] = _as_float32_tensor(tensor)
            tensor.copied()
        if "embeddings.weight" not in state:
            raise ValueError(f"{model_dir}: the checkpoint has no embedding tensor")
        vocab_rows = state["embeddings.weight"].shape[0]
        model = cls(MambaDims(**{**dims.__dict__, "vocab_size": vocab_rows}))
        model.add_exit_heads(sorted(heads))
        for layer, value in heads.items():
            state[f"exits.{layer}.weight"] = value
        trained_dims, trained_layers = trained_exits(model_dir, dims.hidden_size, dims.num_hidden_layers)
        model.matryoshka_dims = list(trained_dims) or None
        model.exit_layers = list(trained_layers) or None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{model_dir}: unexpected tensors {unexpected[:5]}")
        if missing:
            raise ValueError(f"{model_dir}: the checkpoint lacks {missing[:5]}")
        found = tokenizer_path or os.path.join(model_dir, "tokenizer.json")
        if tokenizer_path and not os.path.isfile(tokenizer_path):
            raise FileNotFoundError(f"no tokenizer file {tokenizer_path!r}")
        model.tokenizer_path = os.path.abspath(found) if os.path.isfile(found) else None
        return model

    def save_pretrained(self, save_dir: str, *, tokenizer_path: str | None = None) -> str:
        """Writes config.json + model.safetensors (float32, transformers' MambaModel names) and
        tokenizer.json (the given one, else the one the model was loaded with, if any)."""
        from safetensors.torch import save_file

        os.makedirs(save_dir, exist_ok=True)
        tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in self.state_dict().items()}
        vocab_rows = tensors["embeddings.weight"].shape[0]
        partial = os.path.join(save_dir, "model.safetensors.partial")
        save_file(tensors, partial, metadata={"format": "pt"})
        give_default_mode(partial)  # safetensors creates 0600
        os.replace(partial, os.path.join(save_dir, "model.safetensors"))
        config = transformers_config(self.config, vocab_rows)
        for key in ("matryoshka_dims", "exit_layers"):  # what the model was trained for, when known
            if getattr(self, key, None):
                config[key] = sorted(getattr(self, key), reverse=True)
        with open(os.path.join(save_dir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
        source = tokenizer_path or self.tokenizer_path
        if source:
            target = os.path.join(save_dir, "tokenizer.json")
            if not (os.path.exists(target) and os.path.samefile(source, target)):
                shutil.copyfile(source, target)
        return save_dir

    # --------------------------------------------------------------------------------------
    # forward

    def forward_packed(self, tokens: torch.Tensor, offsets: torch.Tensor, *, exit_layer: int | None = None
                       ) -> torch.Tensor:
        """tokens [T] (sequences back to back), offsets [B + 1] -> final-norm hidden states [T, d]
        (exit_layer=k: block k's, through exit k's norm)."""
        return self.forward_embeddings_packed(self.embeddings(tokens), offsets, exit_layer=exit_layer)

    def forward_embeddings_packed(self, hidden: torch.Tensor, offsets: torch.Tensor, *,
                                  exit_layer: int | None = None) -> torch.Tensor:
        """Input embeddings [T, d] instead of token ids (the gradient reaches them)."""
        if hidden.dim() != 2:
            raise ValueError(f"packed input embeddings must be [T, d], got {tuple(hidden.shape)}")
        n = self.config.num_hidden_layers
        exit_layer = check_exit_layer(exit_layer, n) or n
        offsets = check_offsets(torch.as_tensor(offsets), hidden.shape[0])
        for layer in self.layers[:exit_layer]:
            hidden = layer.forward_packed(hidden, offsets)
        return self.norm_f(hidden) if exit_layer == n else self.exit_norm(hidden, exit_layer)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                inputs_embeds: torch.Tensor | None = None, exit_layer: int | None = None) -> torch.Tensor:
        """input_ids [B, L] (or inputs_embeds [B, L, d]) with an optional right-padding mask
        [B, L] -> final-norm hidden states [B, L, d] (rows past a sequence's length are zero);
        exit_layer=k: block k's states through exit k's norm."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        embeds = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if embeds.dim() != 3:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(embeds.shape[:-1])}")
        batch, length, _ = embeds.shape
        if attention_mask is None:
            offsets = torch.arange(batch + 1, dtype=torch.int64) * length
            return self.forward_embeddings_packed(embeds.reshape(batch * length, -1), offsets,
                                                  exit_layer=exit_layer).view(batch, length, -1)
        mask = attention_mask.to(torch.bool)
        if mask.shape != (batch, length):
            raise ValueError(f"attention_mask must be [B, L] = {(batch, length)}, got {tuple(mask.shape)}")
        lengths = mask.sum(1)
        prefix = torch.arange(length, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
        if not bool((prefix == mask).all()):
            raise ValueError("attention_mask must be right padding (ones, then zeros) in every row")
        packed = self.forward_embeddings_packed(embeds[mask], offsets_from_lengths(lengths.cpu()), exit_layer=exit_layer)
        out = packed.new_zeros((batch, length, packed.shape[-1]))
        return out.masked_scatter(mask.unsqueeze(-1), packed)
