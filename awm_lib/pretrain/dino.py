"""DINO self-distillation: projection head, prototypes, loss, EMA teacher, iBOT masking.

The recipe (Caron et al. 2021, "Emerging properties in self-supervised vision
transformers"; Oquab et al. 2023, DINOv2) in five pieces:

1. **Head.** The backbone's CLS token goes through a small MLP to a
   bottleneck, is L2-normalised, and is compared by cosine similarity with
   ``K`` learned *prototypes* (a weight-normalised linear layer without bias).
   The ``K`` scores are logits of a soft assignment of the view to prototypes.
2. **Teacher = slow copy of the student.** No gradients flow into the
   teacher; after each step its weights move a little towards the student's
   (exponential moving average, momentum rising from ~0.996 to 1 on a cosine).
3. **Loss.** Cross-entropy between the teacher's distribution on one global
   view and the student's on every *other* view (global or local).
4. **No collapse.** Two trivial solutions are blocked by opposite forces:
   *centering* (subtract a running mean of the teacher's logits, so no single
   prototype can win for every image) pushes towards uniform outputs;
   *sharpening* (a low teacher temperature, 0.04 -> 0.07) pushes towards
   one-hot outputs. Balanced, the teacher stays informative.
5. **iBOT term (optional).** Some patches of the student's global views are
   replaced by a learned mask token; the student must predict, for those
   patches, the teacher's patch-level prototype distribution computed on the
   unmasked view. This trains the patch tokens, not just the CLS token: the
   dense features that RoI crops and PCA pictures rely on.

Shapes: ``(V, B, K)`` = views x images x prototypes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from awm_lib.optim import warmup_cosine


class DINOHead(nn.Module):
    """MLP ``in_dim -> hidden -> hidden -> bottleneck``, L2-normalise, cosine against ``K`` prototypes.

    The prototype layer is weight-normalised with its norm fixed to 1 (DINO's
    ``norm_last_layer=True``): we keep the raw vectors as a parameter and
    normalise them in ``forward``, which is the same thing written plainly.
    Logits are therefore cosines in ``[-1, 1]``; temperatures make them sharp.
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, n_layers: int = 3
    ):
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_dim) -> (..., K)
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).t()


def teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution ``softmax((t - c) / temp)`` over the last axis."""
    return F.softmax((teacher_logits - center) / temp, dim=-1)


def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """EMA of the teacher's mean logit: ``m * c + (1 - m) * mean(t)`` over every axis but the last.

    (With several GPUs the batch mean would be all-reduced first; one device here.)
    """
    batch_mean = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).mean(dim=0)
    return center * momentum + batch_mean * (1 - momentum)


def dino_loss(student_logits: torch.Tensor, teacher_p: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean cross-entropy ``-sum_k p_t log softmax(s / T_s)`` over all pairs of different views.

    ``student_logits`` ``(Vs, B, K)`` with the global views first,
    ``teacher_p`` ``(Vt, B, K)`` (teacher probabilities on the ``Vt`` global
    views). Pairs where the student and teacher see the same view are skipped:
    predicting yourself teaches nothing.

    Explained in the book: chapter 6, *Pretraining our own backbone*
    (``notebooks/06_self_supervised_pretraining.ipynb``).
    """
    log_s = F.log_softmax(student_logits / student_temp, dim=-1)  # (Vs, B, K)
    ce = -torch.einsum("tbk,sbk->tsb", teacher_p, log_s)  # (Vt, Vs, B)
    Vt, Vs = ce.shape[:2]
    keep = ~torch.eye(Vt, Vs, dtype=torch.bool, device=ce.device)  # drop t == s
    return ce[keep].mean()


def ibot_loss(
    student_patch_logits: torch.Tensor,
    teacher_patch_p: torch.Tensor,
    masks: torch.Tensor,
    student_temp: float,
) -> torch.Tensor:
    """iBOT masked-patch term: cross-entropy on masked patches, averaged per view, then over views.

    ``masks`` ``(N, P)`` bool, True where the student's patch was masked;
    ``student_patch_logits`` and ``teacher_patch_p`` ``(M, K)`` hold the
    ``M = masks.sum()`` masked patches in ``masks.nonzero()`` order (row-major),
    so the patch head runs only where it is needed. Views without any masked
    patch do not count; with no masked patch at all the loss is 0.

    Explained in the book: chapter 6, *Pretraining our own backbone*
    (``notebooks/06_self_supervised_pretraining.ipynb``).
    """
    ce = -(teacher_patch_p * F.log_softmax(student_patch_logits / student_temp, dim=-1)).sum(-1)  # (M,)
    n_masked = masks.sum(dim=1)  # (N,)
    n_views = int((n_masked > 0).sum())
    if n_views == 0:
        return student_patch_logits.sum() * 0.0
    view_of_patch = masks.nonzero()[:, 0]  # (M,)
    weight = 1.0 / n_masked[view_of_patch].float()  # each view's patches sum to 1
    return (ce * weight).sum() / n_views


def random_patch_masks(
    n_views: int,
    n_patches: int,
    ratio: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``(n_views, n_patches)`` bool: each view is masked with ``probability``, at a ratio drawn from
    ``ratio``.

    Random patches rather than DINOv2's rectangular blocks: simpler, and
    mammographic structures are not rectangular either.

    Explained in the book: chapter 6, *Pretraining our own backbone*
    (``notebooks/06_self_supervised_pretraining.ipynb``).
    """
    r = torch.rand(n_views, 1, device=device, generator=generator) * (ratio[1] - ratio[0]) + ratio[0]
    r = torch.where(
        torch.rand(n_views, 1, device=device, generator=generator) < probability, r, torch.zeros_like(r)
    )
    n_masked = (r * n_patches).round().long()  # (n_views, 1)
    # the n_masked lowest of random scores are masked: an exact count per view
    ranks = torch.rand(n_views, n_patches, device=device, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < n_masked


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student`` for every parameter (m = 1 keeps, 0 copies)."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student must have the same parameters")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)


def cosine_schedule(progress: float, start: float, end: float) -> float:
    """Cosine from ``start`` (progress 0) to ``end`` (progress 1); progress is clipped to ``[0, 1]``.

    The library's one schedule (:func:`awm_lib.optim.warmup_cosine`) without a warm-up: DINO
    anneals the weight decay and the teacher's EMA momentum this way (the learning rate warms up).
    """
    return warmup_cosine(progress, total=1.0, warmup=0.0, peak=start, end=end)


def teacher_temperature(progress: float, start: float, end: float, warmup: float) -> float:
    """Teacher temperature: linear ``start -> end`` over the first ``warmup`` fraction, then ``end``.

    Starting sharper than the final value (DINO: 0.04 -> 0.07) stabilises the
    first steps, when the teacher is as random as the student.
    """
    if warmup <= 0 or progress >= warmup:
        return end
    return start + (end - start) * progress / warmup


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the distributions on the last axis: a collapse monitor.

    ``log K`` = uniform (collapsed to uniform); ``0`` = one-hot. A healthy
    teacher sits well between, and its batch-mean distribution stays spread.
    """
    return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
