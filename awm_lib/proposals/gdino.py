"""Grounding DINO as a proposer, through Hugging Face transformers.

The paper asks an open-vocabulary detector, Grounding DINO, for boxes that
match a text prompt. It did not publish the prompt; ours is a parameter with a
default of ``"a mass. a calcification. a lesion."`` (Grounding DINO expects
lower-case phrases separated by full stops).

The model loads with ``AutoProcessor`` + ``AutoModelForZeroShotObjectDetection``
from a Hub id (default ``IDEA-Research/grounding-dino-tiny``) or a local folder.
Nothing is ever downloaded unless ``local_files_only=False`` is asked for
explicitly: offline, point ``model`` at a folder made with ``save_pretrained``.
:func:`make_tiny_gdino` writes a tiny *randomly initialised* model and
processor to a folder, so the whole path (save -> load -> batch inference ->
post-processing) is tested without network and in seconds; its boxes are
meaningless.

Scores are, per query, the highest sigmoid over the prompt's tokens, as in the
reference implementation; with ``box_threshold=0`` every query is returned
(900 for the real model), sorted by score, clipped to the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from awm_lib.device import choose_device
from awm_lib.errors import ProposalError
from awm_lib.proposals.base import BaseProposer, Proposals, check_image
from awm_lib.proposals.boxes import clip_boxes

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"
DEFAULT_PROMPT = "a mass. a calcification. a lesion."


@dataclass
class GroundingDinoProposer(BaseProposer):
    model: str = DEFAULT_MODEL  # Hub id or local folder
    prompt: str = DEFAULT_PROMPT
    box_threshold: float = 0.0  # keep queries with score >= this
    text_threshold: float = 0.0  # token score needed to name a phrase
    max_boxes: int = 900
    batch_size: int = 4
    device: str | None = None  # default: cuda when present, else cpu
    local_files_only: bool = True  # never touch the network unless asked
    name: str = "gdino"

    def __post_init__(self):
        self._model = None
        self._processor = None

    def _load(self):
        if self._model is not None:
            return
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        local = Path(str(self.model)).expanduser()
        if str(self.model).startswith((".", "/", "~")) and not local.is_dir():  # a path, not a hub id
            raise ProposalError("no such folder: give a Grounding DINO folder made with save_pretrained "
                                "(on the command line: --model DIR)", path=str(self.model))
        try:
            self._processor = AutoProcessor.from_pretrained(
                self.model, local_files_only=self.local_files_only
            )
            model = AutoModelForZeroShotObjectDetection.from_pretrained(
                self.model, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as e:
            raise ProposalError(
                f"cannot load Grounding DINO from {self.model!r} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); "
                "give a local folder made with save_pretrained (on the command line: --model DIR); with "
                "network "
                f"access, download it once (huggingface-cli download {self.model} --local-dir DIR) and give "
                "that folder"
            ) from None
        dev = choose_device(self.device)
        self._model = model.to(dev).eval()

    @property
    def torch_device(self) -> torch.device:
        self._load()
        return next(self._model.parameters()).device

    def propose(self, image, mask=None) -> Proposals:
        return self.propose_batch([image], None if mask is None else [mask])[0]

    def propose_batch(self, images, masks=None) -> list[Proposals]:
        """Run the detector on ``images`` in batches of ``batch_size``; masks are only checked."""
        masks = [None] * len(images) if masks is None else masks
        checked = [check_image(im, m)[0] for im, m in zip(images, masks)]
        out: list[Proposals] = []
        for i in range(0, len(checked), self.batch_size):
            out += self._run(checked[i : i + self.batch_size])
        return out

    @torch.no_grad()
    def _run(self, images: list[np.ndarray]) -> list[Proposals]:
        from PIL import Image

        self._load()
        pil = [Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8)).convert("RGB") for im in images]
        inputs = self._processor(images=pil, text=[self.prompt] * len(pil), return_tensors="pt")
        inputs = {k: v.to(self.torch_device) for k, v in inputs.items()}
        outputs = self._model(**inputs)
        sizes = [im.shape for im in images]  # (H, W) each
        results = self._processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=sizes,
        )
        props = []
        for r, size in zip(results, sizes):
            labels = [str(t) for t in r.get("text_labels", [""] * len(r["scores"]))]
            boxes = clip_boxes(r["boxes"].float().cpu(), size[1], size[0])  # the model may overshoot
            p = Proposals(boxes, r["scores"].float().cpu(), labels, size).sorted()
            props.append(p.take(torch.arange(min(self.max_boxes, len(p)))))
        return props


def tiny_vocab(
    words=("a", "mass", "calcification", "lesion", "the", "breast", "tumor", "finding"),
) -> dict[str, int]:
    """A BERT vocabulary of 1,100 entries with the ids Grounding DINO hard-codes:
    ``[PAD]``=0, ``[UNK]``=100, ``[CLS]``=101, ``[SEP]``=102, ``[MASK]``=103,
    ``.``=1012, ``?``=1029; ``words`` get ids 200, 201, ..."""
    tokens = [f"[unused{i}]" for i in range(1100)]
    for i, t in {
        0: "[PAD]",
        100: "[UNK]",
        101: "[CLS]",
        102: "[SEP]",
        103: "[MASK]",
        1012: ".",
        1029: "?",
    }.items():
        tokens[i] = t
    for j, w in enumerate(words):
        tokens[200 + j] = w
    return {t: i for i, t in enumerate(tokens)}


def make_tiny_gdino(path: str | Path, seed: int = 0, image_size: int = 128) -> Path:
    """Save a tiny random Grounding DINO (model + processor) to ``path`` for offline tests.

    A tiny Swin backbone (no timm), a one-layer BERT, ``d_model=32`` (GroupNorm
    needs a multiple of 32), two decoder layers, 20 queries, images resized to
    ``image_size`` (>= 128) px. About 0.2 M parameters, < 1 MB on disk.
    """
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    path = Path(path)
    vocab = tiny_vocab()
    swin = SwinConfig(
        image_size=image_size, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        window_size=4, out_features=["stage2", "stage3", "stage4"],
    )
    bert = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    cfg = GroundingDinoConfig(
        backbone_config=swin,
        text_config=bert,
        num_queries=20,
        encoder_layers=1,
        decoder_layers=2,
        d_model=32,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        max_text_len=32,
        encoder_n_points=1,
        decoder_n_points=1,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(cfg).eval()
    size = {"shortest_edge": image_size, "longest_edge": int(image_size * 1.5)}
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size=size), tokenizer=BertTokenizer(vocab=vocab)
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
