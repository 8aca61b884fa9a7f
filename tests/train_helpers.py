"""Stand-ins for the training tests: a tiny dataset and model with the RoI classifier's interface.

They let the loop, checkpoints, resume and DDP be tested in a second each,
independently of the real backbone. The task is learnable: an image is
"malignant" when its bright square is brighter than the background by a margin.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


def train_argv(root, out, *, preset: str = "smoke", sets=(), extra=("--no-progress",), dataset: str = "mias"):
    """The ``python -m awm_lib train`` arguments the CLI tests use: one ``--set`` per item of ``sets``."""
    argv = ["train", "--dataset", dataset, "--root", str(root), "--preset", preset, "--out", str(out), *extra]
    for item in sets:
        argv += ["--set", item]
    return argv


class ToyDataset(Dataset):
    """``n`` images (1, 16, 16); label 1 when the square at the RoI is bright."""

    def __init__(self, n: int = 32, seed: int = 0, k: int = 3):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 2
        self.images = 0.2 * torch.rand(n, 1, 16, 16, generator=g)
        self.rois = torch.zeros(n, k, 4)
        for i in range(n):
            x, y = (int(v) for v in torch.randint(0, 12, (2,), generator=g))
            self.images[i, 0, y : y + 4, x : x + 4] += 0.3 + 0.5 * self.labels[i]
            self.rois[i, 0] = torch.tensor([0.0, 0.0, 16.0, 16.0])  # the anchor
            self.rois[i, 1:] = torch.tensor([x, y, x + 4, y + 4], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "rois": self.rois[i],
            "label": int(self.labels[i]),
            "image_id": f"toy{i:03d}",
        }


def toy_collate(items: list[dict]) -> dict:
    return {
        "images": torch.stack([it["image"] for it in items]),  # (B, 1, H, W)
        "rois": torch.stack([it["rois"] for it in items]),  # (B, K, 4)
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.float32),  # (B,)
        "image_ids": [it["image_id"] for it in items],
    }


class ToyModel(nn.Module):
    """A "backbone" (a conv) and a "head" (an MLP with dropout) over mean-pooled features."""

    def __init__(self, dropout: float = 0.0, constant: bool = False, width: int = 8):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.GELU())
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, 1))
        self.constant = constant

    def forward(self, images, rois, **kw):
        feats = self.backbone(images).amax(dim=(2, 3))  # (B, C)
        if self.constant:  # ignores the image: a classifier with AUC 0.5
            feats = feats * 0
        return SimpleNamespace(logits=self.head(feats).squeeze(-1))


def bce_loss(output, batch):
    loss = F.binary_cross_entropy_with_logits(output.logits, batch["labels"])
    return loss, {"bce": loss.detach()}


def make_optim(**kw):
    from awm_lib.train.config import OptimConfig

    base = dict(
        epochs=3,
        batch_size=4,
        lr_backbone=1e-2,
        lr_head=3e-2,
        warmup_steps=2,
        patience=0,
        progress=False,
        deterministic=True,
    )
    base.update(kw)
    return OptimConfig(**base)


def state_dict_equal(a: nn.Module, b: nn.Module, atol: float = 0.0) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(torch.allclose(sa[k], sb[k], atol=atol, rtol=0) for k in sa)


def ddp_worker(rank: int, world: int, port: int, out_dir: str, result_path: str) -> None:
    """One process of the two-process DDP test (spawned by torch.multiprocessing)."""
    import os

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from awm_lib.train.distributed import cleanup, init_from_env
    from awm_lib.train.loop import fit

    dist = init_from_env()
    assert dist.backend == "gloo" and dist.world_size == world
    torch.manual_seed(0)
    model = ToyModel()  # same seed on every rank: same initial weights (DDP also broadcasts them)
    fit(
        model,
        ToyDataset(32, seed=0),
        ToyDataset(12, seed=1),
        make_optim(epochs=2, batch_size=4 // world),
        out_dir,
        loss_fn=bce_loss,
        collate_fn=toy_collate,
        seed=0,
        run_config={"toy": 1},
        dist=dist,
    )
    if rank == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, result_path)
    cleanup(dist)
