"""Background score, packing, PAR and argmax into pseudo-labels (spec §5)."""

import pytest
import torch

from weclip.refine.par import PAR
from weclip.refine.pipeline import PseudoLabelPipeline
from weclip.refine.pseudo_label import IGNORE_INDEX, background_score, pack_scores, scores_to_labels


def make_pseudo_labels(
    images, cams, batch_index, class_index, par, valid=None, ignore_padding=False
):
    """The pipeline's last stage (spec §5): [bg; CAMs] packed, PAR guided by the images, argmax."""
    pipeline = PseudoLabelPipeline(par=par, ignore_padding=ignore_padding)
    scores, keys = pack_scores(cams, batch_index, class_index, images.shape[0], pipeline.bg_power)
    return pipeline.labels(pipeline.refine_scores(images, scores), keys, valid)


def test_background_score_hand_worked():
    # image 0 has two CAMs with values 0.2 and 0.7 at a pixel: bg = 1 - 0.7 = 0.3, power 2: 0.09;
    # image 1 has no CAM: bg = (1 - 0)^p = 1
    cams = torch.tensor([0.2, 0.7]).view(2, 1, 1).expand(2, 2, 3)
    bi = torch.tensor([0, 0])
    torch.testing.assert_close(background_score(cams, bi, 2, 1.0)[0], torch.full((2, 3), 0.3))
    torch.testing.assert_close(background_score(cams, bi, 2, 2.0)[0], torch.full((2, 3), 0.09))
    assert torch.equal(background_score(cams, bi, 2, 1.0)[1], torch.ones(2, 3))


def test_pack_scores_layout():
    # image 0: classes 2, 7; image 1: none; image 2: class 0 -> K_max = 2, 3 channels per image
    cams = torch.stack([torch.full((2, 2), v) for v in (0.1, 0.4, 0.8)])
    scores, keys = pack_scores(cams, torch.tensor([0, 0, 2]), torch.tensor([2, 7, 0]), 3)
    assert scores.shape == (3, 3, 2, 2)
    assert keys.tolist() == [[0, 3, 8], [0, IGNORE_INDEX, IGNORE_INDEX], [0, 1, IGNORE_INDEX]]
    expected = torch.tensor([[0.6, 0.1, 0.4], [1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
    torch.testing.assert_close(scores[:, :, 0, 0], expected)
    with pytest.raises(ValueError, match="grouped by image"):
        pack_scores(cams, torch.tensor([2, 0, 0]), torch.tensor([0, 2, 7]), 3)
    # the same layout from host-side counts (nothing read from batch_index)
    counts = torch.tensor([2, 0, 1])
    scores2, keys2 = pack_scores(
        cams, torch.tensor([0, 0, 2]), torch.tensor([2, 7, 0]), 3, counts=counts
    )
    assert torch.equal(scores2, scores) and torch.equal(keys2, keys)
    with pytest.raises(ValueError, match="counts sum"):
        pack_scores(cams, torch.tensor([0, 0, 2]), torch.tensor([2, 7, 0]), 3, counts=counts + 1)


def test_ties_resolve_to_the_lowest_channel():
    # all channels 0 at a pixel (bg included): argmax -> channel 0 -> background, never a padding
    # channel
    scores = torch.zeros(1, 3, 1, 2)
    # a tie between two classes -> the first (class 4)
    scores[0, 1, 0, 1] = scores[0, 2, 0, 1] = 0.5
    labels = scores_to_labels(scores, torch.tensor([[0, 4, 9]]))
    assert labels.tolist() == [[[0, 4]]]


def test_labels_only_contain_background_and_present_classes():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 24, 24, generator=g)
    batch_index = torch.tensor([0, 0, 0, 2])
    class_index = torch.tensor([1, 5, 6, 3])
    cams = torch.rand(4, 24, 24, generator=g) * 0.99
    labels = make_pseudo_labels(images, cams, batch_index, class_index, PAR(num_iter=3))
    assert labels.shape == (3, 24, 24) and labels.dtype == torch.long
    assert set(labels[0].unique().tolist()) <= {0, 2, 6, 7}
    assert labels[1].unique().tolist() == [0]  # no present class -> all background
    assert set(labels[2].unique().tolist()) <= {0, 4}
    assert IGNORE_INDEX not in labels  # padding channels (image 2 has 2 of them) never win


def test_batched_equals_per_image():
    # packing with zero channels does not change any image's labels
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 20, 20, generator=g)
    cams = torch.rand(3, 20, 20, generator=g) * 0.99
    par = PAR(num_iter=4)
    both = make_pseudo_labels(images, cams, torch.tensor([0, 0, 1]), torch.tensor([3, 8, 0]), par)
    first = make_pseudo_labels(
        images[:1], cams[:2], torch.tensor([0, 0]), torch.tensor([3, 8]), par
    )
    second = make_pseudo_labels(images[1:], cams[2:], torch.tensor([0]), torch.tensor([0]), par)
    assert torch.equal(both, torch.cat([first, second]))


def test_ignore_padding():
    g = torch.Generator().manual_seed(2)
    images = torch.randn(1, 3, 16, 16, generator=g)
    cams = torch.rand(1, 16, 16, generator=g) * 0.99
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    valid[:, 12:] = False
    args = (images, cams, torch.tensor([0]), torch.tensor([4]), PAR(num_iter=2))
    plain = make_pseudo_labels(*args, valid=valid, ignore_padding=False)
    ignored = make_pseudo_labels(*args, valid=valid, ignore_padding=True)
    assert torch.equal(ignored[:, :12], plain[:, :12])
    assert torch.all(ignored[:, 12:] == IGNORE_INDEX) and IGNORE_INDEX not in plain
    with pytest.raises(ValueError, match="valid"):
        make_pseudo_labels(*args, ignore_padding=True)
