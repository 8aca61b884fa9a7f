"""The reference ``_preds.txt`` format: round trip, the paper's real files, malformed lines."""

from pathlib import Path

import pytest
import torch

from awm_lib import paths
from awm_lib.errors import ProposalFileError
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.cache import ProposalCache, settings_hash
from awm_lib.proposals.predsfile import (
    format_preds,
    parse_preds,
    preds_path,
    read_preds,
    write_preds,
)

SAMPLES = paths.gdino_vindr_root() / "samples"


def test_round_trip(tmp_path):
    p = Proposals(
        torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.5, 0.25, 100.0, 80.0]]), torch.tensor([0.2, 0.9])
    )
    f = write_preds(tmp_path / "s" / "img_preds.txt", p)
    text = f.read_text().splitlines()
    assert text[0].split() == ["50.25", "40.125", "99.5", "79.75", "0.9"]  # cx cy w h score, best first
    q = read_preds(f)
    assert torch.allclose(q.boxes, p.sorted().boxes) and torch.allclose(q.scores, torch.tensor([0.9, 0.2]))
    assert read_preds(write_preds(tmp_path / "e_preds.txt", Proposals.empty())).boxes.shape == (0, 4)


def test_reads_the_papers_sample_files():
    files = sorted(SAMPLES.glob("*/*_preds.txt"))
    assert len(files) == 20
    for f in files:
        p = read_preds(f)
        assert len(p) == 50
        assert (p.scores[:-1] >= p.scores[1:]).all()
        assert (p.boxes[:, 2] > p.boxes[:, 0]).all()
    first = files[0].read_text().split("\n")[0].split()
    p = read_preds(files[0])
    cx, cy, w, h, s = map(float, first)
    assert p.boxes[0].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], abs=1e-3)
    assert len(read_preds(files[0], limit=5)) == 5
    assert preds_path(SAMPLES, files[0].parent.name, files[0].name[: -len("_preds.txt")]) == files[0]


@pytest.mark.parametrize(
    "text, where",
    [
        ("1 2 3 4 0.5\n1 2 3 0.5\n", "line 2"),
        ("1 2 3 4 x\n", "line 1"),
        ("\n\n1 2 -3 4 0.5\n", "line 3"),
        ("1 2 3 4 nan\n", "line 1"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, where):
    f = tmp_path / "bad_preds.txt"
    f.write_text(text)
    with pytest.raises(ProposalFileError, match=where) as e:
        read_preds(f)
    assert e.value.path == str(f)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ProposalFileError, match="not found"):
        read_preds(tmp_path / "nope_preds.txt")
    (tmp_path / "b_preds.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ProposalFileError):
        read_preds(tmp_path / "b_preds.txt")
    assert len(parse_preds("")) == 0 and format_preds(Proposals.empty()) == ""


def test_cache_keys_on_settings(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return Proposals(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.5]))

    c = ProposalCache({"proposer": "blob", "sigma": 1}, root=tmp_path)
    a = c.get_or_compute("study/img 1", compute)
    b = c.get_or_compute("study/img 1", compute)
    assert len(calls) == 1 and torch.equal(a.boxes, b.boxes)
    assert (c.dir / "settings.json").is_file() and Path(c.path("study/img 1")).name == "study_img_1_preds.txt"
    other = ProposalCache({"proposer": "blob", "sigma": 2}, root=tmp_path)
    assert other.dir != c.dir and other.get("study/img 1") is None
    assert settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1})
    assert not list(c.dir.glob("*.tmp*"))
