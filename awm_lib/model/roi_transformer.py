"""The RoI classifier: crops -> ViT embeddings -> small transformer over RoI tokens -> logit.

One mammogram becomes ``K`` tokens (the full-breast anchor at index 0, then
the detector's top-k boxes) instead of ~50,000 patch tokens::

    images (B,1,H,W), rois (B,K,4)
      -> extract_rois          crops (B,K,3,S,S)       one batched grid_sample
      -> backbone              (B*K, Db)               ONE ViT call for all crops
      -> [concat box code]     (B,K,Db+P)              the reference's sine code -> Linear (``sinecat`` modes)
      -> proj                  roi_embeddings (B,K,D)  Linear to d_model (``input_proj``; the reference has
      none)
      -> + sine code / RoPE    position of each box
      -> depth x RoIBlock      tokens (B,K,D)          attention + MLP (pre-norm: ours; post-norm: the
      reference's)
      -> pool                  (B,D)                   anchor | attention | mean | cls
      -> head                  logits (B,)             LN -> Linear (ours) | BN -> Linear -> ReLU -> Linear
      (reference)

Two recipes share this code. The reference implementation's (the ``paper``
preset): ``position="sinecat+rope1d"``, no input projection (768 + 256 = 1024
wide), 3 single-head POST-norm blocks whose MLP is one ``Linear + ReLU``,
dropout 0.25 on the attention weights and in the head, ``head="mlp"``,
PyTorch's default initialisation. The project's (``default``, ``smoke``):
multi-head PRE-norm blocks with a GELU MLP, an input projection to a narrow
``d_model``, 2-D RoPE of the box centres, a LayerNorm + Linear head.

Attention uses ``F.scaled_dot_product_attention`` (fused kernels); asking for
``return_attention=True`` switches to an explicit softmax that returns the
weights, for the book's attention figures. Both paths compute the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from awm_lib.errors import CheckpointError, ConfigError
from awm_lib.model.backbone import Backbone, BackboneConfig, build_backbone
from awm_lib.model.crops import extract_rois
from awm_lib.model.position import (
    apply_rope,
    boxes_to_cxcywh_norm,
    check_mode,
    reference_box_code,
    rope_angles,
    sine_box_embedding,
    uses_rope2d,
    uses_sine,
    uses_sine_concat,
)
from awm_lib.model.pretrained import PretrainedModel

POOLINGS = ("anchor", "attention", "mean", "cls", "anchor_attention")
# anchor_attention: the reference's 'attn' pooling, the last block's attention row of the anchor (mean over
# heads)
MLPS = ("gelu", "relu")  # gelu: Linear -> GELU -> Linear (ours); relu: one Linear + ReLU (the reference's)
TOKEN_NORMS = ("none", "batchnorm")
HEADS = (
    "linear",
    "mlp",
)  # linear: LN -> dropout -> Linear (ours); mlp: BN -> dropout -> Linear -> ReLU -> Linear (reference)


@dataclass
class RoIClassifierConfig:
    """Everything that shapes the RoI classifier (the backbone has its own config).

    d_model is the width of the RoI transformer: backbone embeddings (``embed_dim``
    of the backbone, plus ``pos_dim`` with a concatenated ``sinecat`` code) are
    projected to it (``input_proj``). Without the projection (the reference's
    recipe) ``d_model`` must equal that width, e.g. 768 + 256 = 1024.

    ``topk`` counts PROPOSALS: ``topk`` proposals plus the anchor make
    ``K = topk + 1`` tokens per image. The reference's ``k`` counts the anchor:
    its k = 5 is ``topk = 4`` here.

    ``dropout`` acts on the residual branches (attention output, MLP);
    ``attn_dropout`` on the attention weights (where the reference's 0.25 acts);
    ``head_dropout`` before the head's first Linear. ``init_std``: truncated
    normal std of every new Linear (ours, 0.02), or ``None`` for PyTorch's default
    initialisation (the reference's).
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    crop_size: int = 224
    topk: int = 5
    d_model: int = 256
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    pre_norm: bool = True
    # see awm_lib.model.position.POSITION_MODES (rope2d: the project's; sinecat+rope1d: the reference's)
    position: str = "rope2d"
    pooling: str = "anchor"  # anchor | attention | mean | cls
    head_dropout: float = 0.1
    mlp: str = "gelu"
    # linear: LN -> dropout -> Linear(d, 1) (ours)
    # mlp: BN -> dropout -> Linear(d, head_hidden) -> ReLU -> Linear(head_hidden, 1) (the reference's)
    head: str = "linear"
    head_hidden: int = 256
    input_proj: bool = (
        True  # Linear from the backbone (+ concatenated code) width to d_model; the reference has none
    )
    pos_dim: int = 256  # width of the concatenated sinecat code (the reference's 256)
    # "batchnorm": standardise each backbone feature with batch statistics (running statistics at
    # evaluation; BatchNorm1d without affine, over the valid RoIs only) before anything else, as MAE's
    # linear probe does on frozen features; "none": the backbone's embedding as it is
    token_norm: str = "none"
    init_std: float | None = 0.02  # None: PyTorch's default init of new layers (the reference's)
    rope_min_wavelength: float = 0.02
    rope_max_wavelength: float = 4.0
    max_value: float = 1.0  # divide image values by this before normalising (65535 for raw 16-bit)

    def validate(self) -> None:
        check_mode(self.position)
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r}; choose one of {POOLINGS}")
        if self.pooling == "anchor_attention" and self.depth < 1:
            raise ConfigError(
                "pooling=anchor_attention reads the last block's attention: it needs depth >= 1"
            )
        if self.d_model % self.heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        head_dim = self.d_model // self.heads
        if uses_rope2d(self.position) and head_dim % 4:
            raise ConfigError(f"rope2d needs d_model/heads divisible by 4, got {head_dim}")
        if self.position in ("rope1d_index", "sinecat+rope1d") and head_dim % 2:
            raise ConfigError(f"1-D RoPE needs an even d_model/heads, got {head_dim}")
        if uses_sine(self.position) and self.d_model % 8:
            raise ConfigError(f"the sine position code needs d_model divisible by 8, got {self.d_model}")
        if uses_sine_concat(self.position) and (self.pos_dim <= 0 or self.pos_dim % 8):
            raise ConfigError(
                f"model.pos_dim={self.pos_dim} must be a positive multiple of 8 (the reference: 256)"
            )
        if self.token_norm not in TOKEN_NORMS:
            raise ConfigError(f"model.token_norm={self.token_norm!r}; choose one of {TOKEN_NORMS}")
        if self.mlp not in MLPS:
            raise ConfigError(f"model.mlp={self.mlp!r}; choose one of {MLPS}")
        if self.head not in HEADS:
            raise ConfigError(f"model.head={self.head!r}; choose one of {HEADS}")
        if self.head_hidden <= 0:
            raise ConfigError(f"model.head_hidden={self.head_hidden} must be positive")
        for name, lo in (("depth", 0), ("topk", 0), ("crop_size", 1)):
            if getattr(self, name) < lo:
                raise ConfigError(
                    f"{name}={getattr(self, name)} is out of range: it must be an integer >= {lo}"
                )


@dataclass
class RoIOutput:
    """What :class:`RoIClassifier` returns.

    logits (B,): one malignancy logit per image.
    roi_embeddings (B, K, D): backbone embeddings after the input projection to
        d_model (with a ``sinecat`` code: the projected concatenation), BEFORE
        added position codes and the transformer. The project's presets put the
        repulsive loss here (``loss.repulsive_on="embeddings"``); the supervised
        contrastive losses always act here.
    tokens (B, K, D): RoI tokens after the transformer (and final norm): the
        outputs of the last block, where the reference puts the repulsive loss
        (``loss.repulsive_on="tokens"``).
    pooled (B, D): the image embedding the head classifies.
    roi_mask (B, K) bool: True for real RoIs, False for padding.
    attention: per block (B, heads, K', K') weights, K' = K (+1 with CLS pooling),
        only with ``return_attention=True``.
    pool_weights (B, K): how ``pooled`` weights the RoI tokens (one-hot for
        "anchor", uniform for "mean", learned for "attention", None for "cls").
    """

    logits: torch.Tensor
    roi_embeddings: torch.Tensor
    tokens: torch.Tensor
    pooled: torch.Tensor
    roi_mask: torch.Tensor | None = None
    attention: list[torch.Tensor] | None = None
    pool_weights: torch.Tensor | None = None


class RoIAttention(nn.Module):
    """Multi-head self-attention over RoI tokens with optional rotary position codes."""

    def __init__(self, d_model: int, heads: int, attn_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        angles: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, K, D); key_mask (B, K) True = real RoI; angles (B, K, hd/2) rotary angles."""
        b, k, d = x.shape
        q, kk, v = self.qkv(x).split(d, dim=-1)
        q, kk, v = (
            t.view(b, k, self.heads, d // self.heads).transpose(1, 2) for t in (q, kk, v)
        )  # (B, h, K, hd)
        if angles is not None:  # rotate queries and keys: logits depend on relative position
            q, kk = apply_rope(q, angles[:, None]), apply_rope(kk, angles[:, None])
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, K)
        p = self.attn_dropout if self.training else 0.0
        if need_weights:  # explicit softmax: same maths as SDPA, weights kept for plots
            scores = (q @ kk.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, h, K, K)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, p) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, kk, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(b, k, d)  # (B, K, D)
        return self.resid_dropout(self.proj(y)), weights


class RoIBlock(nn.Module):
    """Transformer block: attention + MLP, each with a residual.

    Pre-norm (ours): ``x + attn(LN(x))``, then ``x + mlp(LN(x))``. Post-norm (the
    reference's): ``LN(x + attn(x))``, then ``LN(x + mlp(x))``.
    """

    def __init__(self, cfg: RoIClassifierConfig):
        super().__init__()
        d = cfg.d_model
        self.pre_norm = cfg.pre_norm
        self.norm1 = nn.LayerNorm(d)
        self.attn = RoIAttention(d, cfg.heads, cfg.attn_dropout, cfg.dropout)
        self.norm2 = nn.LayerNorm(d)
        if cfg.mlp == "relu":  # the reference: one Linear + ReLU, width d
            self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(cfg.dropout))
        else:
            hidden = int(cfg.mlp_ratio * d)
            self.mlp = nn.Sequential(
                nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d), nn.Dropout(cfg.dropout)
            )

    def forward(self, x, key_mask=None, angles=None, need_weights=False):
        if self.pre_norm:
            a, w = self.attn(self.norm1(x), key_mask, angles, need_weights)
            x = x + a
            return x + self.mlp(self.norm2(x)), w
        a, w = self.attn(x, key_mask, angles, need_weights)
        x = self.norm1(x + a)
        return self.norm2(x + self.mlp(x)), w


class AttentionPool(nn.Module):
    """Attention-MIL pooling (Ilse et al. 2018): a small MLP scores each token, softmax over RoIs."""

    def __init__(self, d_model: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d_model, d_model // 2), nn.Tanh(), nn.Linear(d_model // 2, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.score(x).squeeze(-1).float()  # (B, K)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = s.softmax(dim=-1)  # (B, K)
        return (w.to(x.dtype)[..., None] * x).sum(dim=1), w


class RoIClassifier(PretrainedModel, nn.Module):
    """Backbone + crops + position codes + RoI transformer + pooling + binary head.

    Saves and loads itself like a transformers model: :meth:`save_pretrained`
    (``config.json`` + ``model.safetensors``) and :meth:`from_pretrained`, which
    also takes a training run folder (its best checkpoint) (:mod:`awm_lib.model.pretrained`).

    Explained in the book: chapter 4, *Where does the model look?*
    (``notebooks/04_attention_visualisation.ipynb``).
    """

    MODEL_TYPE = "awm-roi-classifier"
    CONFIG_CLASS = RoIClassifierConfig

    @classmethod
    def config_from_training_run(cls, run_config: dict) -> dict:
        if run_config.get("arch", "roi") != "roi":
            raise CheckpointError(
                f"this run trained the {run_config.get('arch')!r} model, not a RoI classifier"
            )
        return run_config["model"]

    def __init__(self, cfg: RoIClassifierConfig, backbone: Backbone | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else build_backbone(cfg.backbone)
        if cfg.crop_size % self.backbone.patch_size:
            raise ConfigError(
                f"crop_size={cfg.crop_size} is not a multiple of the backbone's patch size "
                f"{self.backbone.patch_size}; use e.g. 224 or 448"
            )
        d = cfg.d_model
        # the reference's box code: sine -> Linear(P, P), concatenated to the CLS embedding
        self.pos_proj = nn.Linear(cfg.pos_dim, cfg.pos_dim) if uses_sine_concat(cfg.position) else None
        width = self.backbone.embed_dim + (cfg.pos_dim if self.pos_proj is not None else 0)
        self.token_norm = (
            nn.BatchNorm1d(self.backbone.embed_dim, affine=False) if cfg.token_norm == "batchnorm" else None
        )
        if cfg.input_proj:
            self.proj = nn.Linear(width, d)
        elif width != d:
            code = f" + model.pos_dim {cfg.pos_dim}" if self.pos_proj is not None else ""
            raise ConfigError(
                f"model.input_proj=false needs model.d_model = the backbone's embed_dim "
                f"{self.backbone.embed_dim}{code} = {width}, got {d}; set model.d_model={width} "
                "or model.input_proj=true"
            )
        else:
            self.proj = nn.Identity()
        self.blocks = nn.ModuleList([RoIBlock(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.pooling == "cls" else None
        self.attn_pool = AttentionPool(d) if cfg.pooling == "attention" else None
        if cfg.head == "mlp":  # the reference: BN -> dropout -> Linear(d, 256) -> ReLU -> Linear(256, 1)
            h = cfg.head_hidden
            self.head = nn.Sequential(
                nn.BatchNorm1d(d), nn.Dropout(cfg.head_dropout), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 1)
            )
        else:
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Dropout(cfg.head_dropout), nn.Linear(d, 1))
        self._init_new_weights()

    def _init_new_weights(self) -> None:
        if self.cfg.init_std is None:  # PyTorch's default initialisation (the reference's)
            if self.cls_token is not None:
                nn.init.normal_(self.cls_token, std=0.02)
            return
        for name, mod in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=self.cfg.init_std)
                nn.init.zeros_(mod.bias)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=self.cfg.init_std)

    # -- parameter groups (separate learning rates for backbone and head) --------------
    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.requires_grad]

    # -- forward -----------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        rois: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        roi_mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> RoIOutput:
        """images (B, 1, H, W) in [0, 1]; rois (B, K, 4) xyxy pixels, anchor at index 0.

        image_sizes (B, 2) as (H, W): the real extent of each (possibly padded)
        image, used to normalise box coordinates; default: the tensor's H, W.
        roi_mask (B, K) bool: True for real RoIs, False for padding.
        """
        b, _, h, w = images.shape
        if image_sizes is None:
            image_sizes = torch.tensor([[h, w]], device=rois.device).expand(b, 2)
        bcfg = self.backbone.cfg
        crops = extract_rois(
            images, rois, self.cfg.crop_size, bcfg.pixel_mean, bcfg.pixel_std, max_value=self.cfg.max_value
        )  # (B, K, 3, S, S)
        boxes_norm = boxes_to_cxcywh_norm(rois.float(), image_sizes)  # (B, K, 4)
        return self.forward_crops(crops, boxes_norm, roi_mask, return_attention)

    def forward_crops(
        self,
        crops: torch.Tensor,
        boxes_norm: torch.Tensor,
        roi_mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> RoIOutput:
        """crops (B, K, 3, S, S) normalised; boxes_norm (B, K, 4) cxcywh in [0, 1]."""
        b, k = crops.shape[:2]
        feats = self.backbone(crops.flatten(0, 1)).view(b, k, -1)  # (B, K, Db): one ViT call
        return self.forward_tokens(feats, boxes_norm, roi_mask, return_attention)

    def _normalise_tokens(self, feats: torch.Tensor, roi_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, K, Db) -> (B, K, Db) standardised by ``token_norm``; padded RoIs neither enter the batch
        statistics nor change (they stay masked downstream)."""
        flat = feats.reshape(-1, feats.shape[-1])  # (B*K, Db)
        if roi_mask is None:
            return self.token_norm(flat).reshape(feats.shape)
        valid = roi_mask.reshape(-1)  # (B*K,)
        out = flat.clone()
        out[valid] = self.token_norm(flat[valid])
        return out.reshape(feats.shape)

    def forward_tokens(
        self,
        feats: torch.Tensor,
        boxes_norm: torch.Tensor,
        roi_mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> RoIOutput:
        """Everything after the backbone. feats (B, K, Db): the backbone's embedding of each crop.

        :meth:`forward_crops` calls this with the ViT's output; the frozen-backbone
        path (``awm_lib.features``, preset ``frozen``) calls it with cached tokens,
        so both run the very same position codes, transformer, pooling and head.
        """
        cfg = self.cfg
        b, k = feats.shape[:2]
        if self.token_norm is not None:
            feats = self._normalise_tokens(feats, roi_mask)
        if self.pos_proj is not None:  # the reference: [CLS embedding | Linear(sine code)]
            code = self.pos_proj(reference_box_code(boxes_norm, cfg.pos_dim).to(feats.dtype))  # (B, K, P)
            feats = torch.cat([feats, code], dim=-1)  # (B, K, Db + P)
        emb = self.proj(feats)  # (B, K, D)
        x = emb
        if uses_sine(cfg.position):
            x = x + sine_box_embedding(boxes_norm, cfg.d_model).to(x.dtype)
        angles = rope_angles(
            cfg.position,
            boxes_norm,
            cfg.d_model // cfg.heads,
            cfg.rope_min_wavelength,
            cfg.rope_max_wavelength,
        )  # (B, K, hd/2) or None
        mask = roi_mask
        if self.cls_token is not None:  # a learned token placed where the anchor is
            x = torch.cat([self.cls_token.expand(b, 1, -1).to(x.dtype), x], dim=1)  # (B, 1+K, D)
            if angles is not None:
                angles = torch.cat([angles[:, :1], angles], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        attention = [] if return_attention else None
        anchor_row = None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            need = return_attention or (last and cfg.pooling == "anchor_attention")
            x, wts = block(x, mask, angles, need)
            if attention is not None:
                attention.append(wts)
            if last and cfg.pooling == "anchor_attention":
                anchor_row = wts[:, :, 0, :].mean(dim=1)  # (B, K): how the anchor attends, mean over heads
        x = self.norm(x)
        if (
            anchor_row is not None
        ):  # the reference's 'attn' pooling: the anchor's attention weights over the tokens
            pooled, pool_weights = (anchor_row.to(x.dtype)[..., None] * x).sum(dim=1), anchor_row
        else:
            pooled, pool_weights = self._pool(x, roi_mask)
        logits = self.head(pooled).squeeze(-1)  # (B,)
        tokens = x[:, 1:] if self.cls_token is not None else x
        return RoIOutput(
            logits=logits,
            roi_embeddings=emb,
            tokens=tokens,
            pooled=pooled,
            roi_mask=roi_mask,
            attention=attention,
            pool_weights=pool_weights,
        )

    def _pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, K', D) -> pooled (B, D), weights over the K RoIs (B, K) or None."""
        mode = self.cfg.pooling
        b, k = x.shape[:2]
        if mode == "cls":
            return x[:, 0], None
        if mode == "attention":
            return self.attn_pool(x, mask)
        if mode == "anchor":
            w = torch.zeros(b, k, device=x.device)
            w[:, 0] = 1.0
            return x[:, 0], w
        valid = torch.ones(b, k, device=x.device) if mask is None else mask.float()  # mean
        w = valid / valid.sum(dim=1, keepdim=True).clamp_min(1.0)
        return (w.to(x.dtype)[..., None] * x).sum(dim=1), w


def build_roi_classifier(cfg: RoIClassifierConfig) -> RoIClassifier:
    """The one constructor the training code needs."""
    return RoIClassifier(cfg)
