"""The training objective: weighted BCE plus terms that shape the RoI embeddings.

* :func:`weighted_bce` - the classification loss; cancers are rare, so the
  positive class is up-weighted (``pos_weight``, the reference uses 10).
* :func:`repulsive_loss` - the reference implementation's "contrastive" term:
  the mean SQUARED cosine similarity between different RoIs of the same image.
  It pushes an image's RoI embeddings towards orthogonality so the K tokens
  carry different information (0 when orthogonal, 1 when identical). Where it
  acts is ``LossConfig.repulsive_on``: the reference puts it on the OUTPUTS of
  the last transformer block (``"tokens"``) and leaves the anchor out; the
  project's presets put it on the projected backbone embeddings, before the
  transformer (``"embeddings"``).
* :func:`supcon_loss` - supervised contrastive loss (Khosla et al. 2020) with
  hard negatives up-weighted as in Robinson et al. 2021 ("Contrastive learning
  with hard negative samples"): used across the batch at IMAGE level (cancer vs
  not) and at RoI level (:func:`roi_supcon_loss`) where lesion boxes tell which
  RoIs overlap a malignant lesion.

:func:`compute_loss` combines them according to a :class:`LossConfig`.
All losses are computed in float32, also under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from awm_lib.errors import ConfigError
from awm_lib.model.roi_transformer import RoIOutput

REPULSIVE_TARGETS = ("tokens", "embeddings")  # where the repulsive term acts
_NEG = -1e9  # a finite "minus infinity": keeps logsumexp and its gradient NaN-free


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy on logits (B,), labels (B,) in {0, 1}; positives count ``pos_weight`` times.

    Explained in the book: chapter 5, *Contrastive training* (``notebooks/05_contrastive_training.ipynb``).
    """
    pw = torch.tensor(pos_weight, device=logits.device, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=pw)


def repulsive_loss(
    roi_embeddings: torch.Tensor, roi_mask: torch.Tensor | None = None, include_anchor: bool = True
) -> torch.Tensor:
    """Mean squared off-diagonal cosine similarity of each image's RoI embeddings.

    roi_embeddings (B, K, D); roi_mask (B, K) True = real RoI. Per image: the mean
    of cos(e_i, e_j)^2 over ordered pairs i != j of real RoIs; then the mean over
    images that have at least two real RoIs. ``include_anchor=False`` leaves out
    index 0 (the full-breast anchor contains every other crop).

    Explained in the book: chapter 5, *Contrastive training* (``notebooks/05_contrastive_training.ipynb``).
    """
    b, k, _ = roi_embeddings.shape
    z = F.normalize(roi_embeddings.float(), dim=-1)
    cos = z @ z.transpose(1, 2)  # (B, K, K)
    valid = torch.ones(b, k, dtype=torch.bool, device=z.device) if roi_mask is None else roi_mask.bool()
    if not include_anchor:
        valid = valid.clone()
        valid[:, 0] = False
    eye = torch.eye(k, dtype=torch.bool, device=z.device)
    pairs = valid[:, :, None] & valid[:, None, :] & ~eye  # (B, K, K)
    n_pairs = pairs.sum(dim=(1, 2))  # (B,)
    per_image = (cos.square() * pairs).sum(dim=(1, 2)) / n_pairs.clamp_min(1)
    has = (n_pairs > 0).float()
    return (per_image * has).sum() / has.sum().clamp_min(1.0)


def supcon_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    beta: float = 0.0,
    valid: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss with hard-negative re-weighting.

    embeddings (N, D), labels (N,). With s_ij = cos(z_i, z_j) / temperature, for
    each anchor i with positives P(i) (same label, j != i) and negatives N(i):

        L_i = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / (sum_{a in P(i)} e^{s_ia}
                                                    + sum_{n in N(i)} w_in e^{s_in}) )

    with hard-negative weights w_in = e^{beta s_in} / mean_{n' in N(i)} e^{beta s_in'}
    (Robinson et al.: negatives most similar to the anchor count more; the
    weights average to 1, so beta = 0 is plain SupCon). The loss is the mean
    of L_i over anchors that have at least one positive (others have nothing
    to pull towards and are skipped); 0 if there are none.

    valid (N,) bool: samples that take part at all. anchors (N,) bool: samples
    that act as anchors (default: all valid ones).

    Explained in the book: chapter 5, *Contrastive training* (``notebooks/05_contrastive_training.ipynb``).
    """
    n = embeddings.shape[0]
    z = F.normalize(embeddings.float(), dim=-1)
    sim = z @ z.T / temperature  # (N, N)
    dev = z.device
    ok = torch.ones(n, dtype=torch.bool, device=dev) if valid is None else valid.bool()
    pair_ok = ok[:, None] & ok[None, :] & ~torch.eye(n, dtype=torch.bool, device=dev)
    same = labels[:, None] == labels[None, :]
    pos = same & pair_ok  # (N, N)
    neg = ~same & pair_ok
    # log w_in = beta s_in - log mean_n e^{beta s_in}  (log space: no overflow)
    beta_sim = torch.where(neg, beta * sim, torch.full_like(sim, _NEG))
    n_neg = neg.sum(dim=1, keepdim=True).clamp_min(1)
    log_w = beta_sim - (torch.logsumexp(beta_sim, dim=1, keepdim=True) - n_neg.float().log())
    terms = torch.where(pos, sim, torch.where(neg, sim + log_w, torch.full_like(sim, _NEG)))
    log_prob = sim - torch.logsumexp(terms, dim=1, keepdim=True)  # (N, N)
    n_pos = pos.sum(dim=1)
    loss_i = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_pos.clamp_min(1)
    use = (n_pos > 0) & ok
    if anchors is not None:
        use = use & anchors.bool()
    use = use.float()
    return (loss_i * use).sum() / use.sum().clamp_min(1.0)


def roi_supcon_loss(
    roi_embeddings: torch.Tensor,
    roi_labels: torch.Tensor,
    roi_mask: torch.Tensor | None = None,
    temperature: float = 0.1,
    beta: float = 0.0,
    malignant_anchors_only: bool = True,
) -> torch.Tensor:
    """SupCon over all RoIs of the batch, where lesion boxes are known.

    roi_embeddings (B, K, D); roi_labels (B, K): 1 = overlaps a malignant
    lesion, 0 = anything else (benign look-alikes, normal tissue), -1 = ignore
    (e.g. the anchor, partial overlaps, padding). Malignant RoIs (from any image)
    are pulled together and pushed away from the rest. With
    ``malignant_anchors_only`` only malignant RoIs act as anchors, so normal
    tissue is not forced into one cluster of its own.

    Explained in the book: chapter 5, *Contrastive training* (``notebooks/05_contrastive_training.ipynb``).
    """
    z = roi_embeddings.flatten(0, 1)  # (B*K, D)
    lab = roi_labels.flatten()
    valid = lab >= 0
    if roi_mask is not None:
        valid = valid & roi_mask.flatten().bool()
    anchors = (lab == 1) if malignant_anchors_only else None
    return supcon_loss(z, lab, temperature, beta, valid=valid, anchors=anchors)


def label_rois(
    rois: torch.Tensor,
    lesion_boxes: torch.Tensor,
    malignant: torch.Tensor,
    min_overlap: float = 0.5,
    anchor_index: int | None = 0,
) -> torch.Tensor:
    """RoI labels for :func:`roi_supcon_loss` from lesion boxes (all xyxy, same pixels).

    rois (K, 4), lesion_boxes (M, 4), malignant (M,) bool -> (K,) long in {1, 0, -1}.
    overlap(roi, lesion) = intersection / min(area of roi, area of lesion), so a
    RoI inside a big lesion and a RoI around a small lesion both count. 1 if the
    overlap with some malignant lesion is >= ``min_overlap``; -1 (ignore) if it
    is positive but smaller, or if the RoI is the anchor (it contains everything);
    0 otherwise (benign lesions and normal tissue).
    """
    k = rois.shape[0]
    labels = torch.zeros(k, dtype=torch.long, device=rois.device)
    mal = lesion_boxes[malignant.bool()].to(rois)
    if mal.numel():
        lt = torch.maximum(rois[:, None, :2], mal[None, :, :2])
        rb = torch.minimum(rois[:, None, 2:], mal[None, :, 2:])
        inter = (rb - lt).clamp_min(0).prod(-1)  # (K, M)
        area_r = (rois[:, 2:] - rois[:, :2]).clamp_min(0).prod(-1)  # (K,)
        area_l = (mal[:, 2:] - mal[:, :2]).clamp_min(0).prod(-1)  # (M,)
        overlap = (inter / torch.minimum(area_r[:, None], area_l[None, :]).clamp_min(1e-6)).amax(dim=1)
        labels[overlap > 0] = -1
        labels[overlap >= min_overlap] = 1
    if anchor_index is not None and k > anchor_index:
        labels[anchor_index] = -1
    return labels


@dataclass
class LossConfig:
    """Weights of each term (0 switches a term off) and their settings.

    Defaults follow the reference implementation: pos_weight 10, repulsive 0.3
    on the last block's outputs (``repulsive_on="tokens"``), anchor excluded.
    ``repulsive_on="embeddings"`` (the project's presets) puts the term on the
    projected backbone embeddings instead, before position codes and attention.
    """

    pos_weight: float = 10.0
    repulsive_weight: float = 0.3
    repulsive_include_anchor: bool = False  # the reference excludes the anchor (it contains every other crop)
    repulsive_on: str = (
        "tokens"  # "tokens" (transformer outputs, the reference) | "embeddings" (projected, ours)
    )
    supcon_weight: float = 0.0  # image level, across the batch
    roi_supcon_weight: float = 0.0  # RoI level, needs batch["roi_labels"]
    temperature: float = 0.1
    hard_negative_beta: float = 1.0
    image_embedding: str = "pooled"  # "pooled" (what the head sees) | "anchor" (anchor RoI embedding)
    malignant_anchors_only: bool = True

    def validate(self) -> None:
        if self.repulsive_on not in REPULSIVE_TARGETS:
            raise ConfigError(f"repulsive_on={self.repulsive_on!r}; choose one of {REPULSIVE_TARGETS}")
        if self.image_embedding not in ("pooled", "anchor"):
            raise ConfigError(f"image_embedding={self.image_embedding!r}; use 'pooled' or 'anchor'")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be > 0")
        for name in ("pos_weight", "repulsive_weight", "supcon_weight", "roi_supcon_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")


def _get(batch: Any, *names: str) -> Any:
    for name in names:
        if isinstance(batch, Mapping) and name in batch:
            return batch[name]
        if not isinstance(batch, Mapping) and hasattr(batch, name):
            return getattr(batch, name)
    return None


def compute_loss(
    output: RoIOutput, batch: Any, cfg: LossConfig | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its detached parts ``{"bce", "repulsive", "supcon", "roi_supcon", "total"}``.

    batch: a mapping (or object) with ``labels`` (B,) in {0, 1} and, for the
    RoI-level term, ``roi_labels`` (B, K) in {1, 0, -1}. Padding comes from
    ``output.roi_mask``.
    """
    cfg = cfg or LossConfig()
    cfg.validate()
    labels = _get(batch, "labels", "label")
    if labels is None:
        raise ConfigError("compute_loss needs batch['labels'] (B,) with 0/1 image labels")
    labels = labels.to(output.logits.device)
    parts: dict[str, torch.Tensor] = {"bce": weighted_bce(output.logits, labels, cfg.pos_weight)}
    total = parts["bce"]
    if cfg.repulsive_weight > 0:
        where = output.tokens if cfg.repulsive_on == "tokens" else output.roi_embeddings  # (B, K, D)
        parts["repulsive"] = repulsive_loss(
            where, output.roi_mask, include_anchor=cfg.repulsive_include_anchor
        )
        total = total + cfg.repulsive_weight * parts["repulsive"]
    if cfg.supcon_weight > 0:
        emb = output.pooled if cfg.image_embedding == "pooled" else output.roi_embeddings[:, 0]
        parts["supcon"] = supcon_loss(emb, labels, cfg.temperature, cfg.hard_negative_beta)
        total = total + cfg.supcon_weight * parts["supcon"]
    if cfg.roi_supcon_weight > 0:
        roi_labels = _get(batch, "roi_labels")
        if roi_labels is None:
            raise ConfigError(
                "roi_supcon_weight > 0 needs batch['roi_labels'] (B, K) from lesion boxes "
                "(see awm_lib.losses.label_rois); set roi_supcon_weight=0 for data without boxes"
            )
        parts["roi_supcon"] = roi_supcon_loss(
            output.roi_embeddings,
            roi_labels.to(output.logits.device),
            output.roi_mask,
            cfg.temperature,
            cfg.hard_negative_beta,
            cfg.malignant_anchors_only,
        )
        total = total + cfg.roi_supcon_weight * parts["roi_supcon"]
    parts["total"] = total
    return total, {k: v.detach() for k, v in parts.items()}
