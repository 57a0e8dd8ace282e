"""Batched softmax Grad-CAM (spec §3, §1.6) against a per-class loop, plus closed-form checks."""

import pytest
import torch
import torch.nn.functional as F

from weclip.cam.gradcam import gradcam, gradcam_from_activations, minmax_normalize, present_pairs


def _inputs(tiny_clip, num_fg=5, num_bg=4, size=48, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    feats, attns = tiny_clip.forward_blocks(images)
    text_fg = F.normalize(torch.randn(num_fg, tiny_clip.embed_dim, generator=g), dim=-1)
    text_bg = F.normalize(torch.randn(num_bg, tiny_clip.embed_dim, generator=g), dim=-1)
    return images, feats, attns, text_fg, text_bg


def _per_class_loop(backbone, last_input, cls_labels, text_fg, text_bg, grid):
    """The authors' loop: per image, text = [present fg; bg]; per class one forward + backward."""
    cams = []
    for i in range(last_input.shape[0]):
        present = torch.nonzero(cls_labels[i]).flatten().tolist()
        text = torch.cat([text_fg[present], text_bg])
        for j, _ in enumerate(present):
            act, _, emb = backbone.forward_last(last_input[i : i + 1])
            probs = (backbone.logit_scale * emb @ text.t()).softmax(-1)
            (grad,) = torch.autograd.grad(probs[0, j], act)
            a, g = act[0, 1:].detach(), grad[0, 1:]  # (n, D), CLS dropped
            cam = torch.relu(a @ g.mean(0)).view(*grid)
            for _ in range(2):
                cam = (cam - cam.min()) / ((cam - cam.min()).max() + 1e-7)
            cams.append(cam)
    return torch.stack(cams)


@pytest.mark.parametrize("leaf", ["act", "qkv"])
@pytest.mark.parametrize("strategy", ["rows", "slots", "auto"])
def test_batched_equals_per_class_loop(tiny_clip, strategy, leaf):
    # "qkv" differentiates to the last block's q/k/v projection and maps the spatial mean of that
    # gradient through W_in: the same channel weights, summed in another order (fp32 rounding of a
    # 36-term mean and a 192-term product: ~1e-7 relative, far below the 1e-5 tolerance)
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip)
    cls_labels = torch.tensor(
        [[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32
    )
    out = gradcam(
        tiny_clip, feats[-1], cls_labels, text_fg, text_bg, (6, 6), strategy=strategy, leaf=leaf
    )
    ref = _per_class_loop(tiny_clip, feats[-1], cls_labels, text_fg, text_bg, (6, 6))
    # pairs: image 0 classes 1, 3, 4; image 1 none; image 2 class 0
    assert out.batch_index.tolist() == [0, 0, 0, 2]
    assert out.class_index.tolist() == [1, 3, 4, 0]
    assert out.cams.shape == (4, 6, 6)
    torch.testing.assert_close(out.cams, ref, atol=1e-5, rtol=0)
    # the last block's attention exists for every image, including the one without classes
    assert out.attn_last.shape == (3, 37, 37)
    torch.testing.assert_close(out.attn_last.sum(-1), torch.ones(3, 37), atol=1e-5, rtol=0)
    # the pair counts per image, on the host
    assert out.counts.device.type == "cpu" and out.counts.tolist() == [3, 0, 1]


def test_qkv_gradient_maps_to_the_activation_gradient(tiny_clip):
    # dt/d act = (dt/d qkv) W_in, token by token (qkv = act W_inᵀ + b is the only use of act)
    _, feats, _, _, _ = _inputs(tiny_clip, seed=5)
    act, _, emb = tiny_clip.forward_last(feats[-1])
    (g_act,) = torch.autograd.grad(emb[:, 3].sum(), act)
    act2, qkv, _, emb2 = tiny_clip.forward_last_qkv(feats[-1])
    (g_qkv,) = torch.autograd.grad(emb2[:, 3].sum(), qkv)
    assert torch.equal(act, act2.requires_grad_(True)) and qkv.shape[-1] == 3 * act.shape[-1]
    scale = g_act.abs().max()
    torch.testing.assert_close(tiny_clip.qkv_grad_to_act(g_qkv), g_act, atol=1e-5 * scale, rtol=0)
    with pytest.raises(ValueError, match="leaf"):
        gradcam(
            tiny_clip,
            feats[-1],
            torch.ones(3, 5),
            torch.ones(5, 32),
            torch.ones(2, 32),
            (6, 6),
            leaf="x",
        )


def test_labels_on_any_device_give_the_same_pairs(tiny_clip):
    # the pair list is read on the host; labels given as bool, int or float mean the same
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip, seed=6)
    labels = torch.tensor([[0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 1, 0, 0]])
    ref = gradcam(tiny_clip, feats[-1], labels.float(), text_fg, text_bg, (6, 6))
    for other in (labels.bool(), labels.long()):
        out = gradcam(tiny_clip, feats[-1], other, text_fg, text_bg, (6, 6))
        assert torch.equal(out.batch_index, ref.batch_index)
        assert torch.equal(out.cams, ref.cams)


def test_cams_only_for_present_classes_and_in_unit_range(tiny_clip):
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip, seed=1)
    cls_labels = torch.tensor([[1, 0, 0, 0, 1], [0, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    out = gradcam(tiny_clip, feats[-1], cls_labels, text_fg, text_bg, (6, 6))
    pairs = set(zip(out.batch_index.tolist(), out.class_index.tolist()))
    assert pairs == {(0, 0), (0, 4), (1, 2), (2, 1), (2, 2), (2, 3)}
    assert out.cams.min() >= 0 and out.cams.max() <= 1
    assert not out.cams.requires_grad
    # softmax over [present fg; bg] only: absent fg columns are exactly 0, rows sum to 1
    assert torch.all(out.probs[:, :5][~cls_labels] == 0)
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(3), atol=1e-6, rtol=0)


def test_absent_class_embeddings_do_not_matter(tiny_clip):
    # Present classes come only from cls_labels: changing the prompt of an absent class changes
    # nothing.
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip, seed=2)
    cls_labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]])
    out_a = gradcam(tiny_clip, feats[-1], cls_labels, text_fg, text_bg, (6, 6))
    text_fg2 = text_fg.clone()
    text_fg2[4] = -text_fg[4]  # class 4 is absent everywhere
    out_b = gradcam(tiny_clip, feats[-1], cls_labels, text_fg2, text_bg, (6, 6))
    torch.testing.assert_close(out_a.cams, out_b.cams, atol=1e-6, rtol=0)


@pytest.mark.parametrize("strategy", ["rows", "slots"])
def test_no_present_class_anywhere(tiny_clip, strategy):
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip, seed=3)
    labels = torch.zeros(3, 5)
    out = gradcam(tiny_clip, feats[-1], labels, text_fg, text_bg, (6, 6), strategy=strategy)
    assert out.cams.shape == (0, 6, 6) and out.batch_index.numel() == 0
    assert out.attn_last.shape == (3, 37, 37)


def test_runs_under_no_grad(tiny_clip):
    # callers (validation, the pseudo-label tool) may run under no_grad; Grad-CAM enables autograd
    # itself
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip, seed=4)
    cls_labels = torch.tensor([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    ref = gradcam(tiny_clip, feats[-1], cls_labels, text_fg, text_bg, (6, 6)).cams
    with torch.no_grad():
        out = gradcam(tiny_clip, feats[-1], cls_labels, text_fg, text_bg, (6, 6)).cams
    torch.testing.assert_close(out, ref)


def test_bad_shapes_raise(tiny_clip):
    _, feats, _, text_fg, text_bg = _inputs(tiny_clip)
    with pytest.raises(ValueError, match="tokens"):
        gradcam(tiny_clip, feats[-1], torch.ones(3, 5), text_fg, text_bg, (5, 6))
    with pytest.raises(ValueError, match="cls_labels"):
        gradcam(tiny_clip, feats[-1], torch.ones(3, 4), text_fg, text_bg, (6, 6))
    with pytest.raises(ValueError, match="strategy"):
        gradcam(tiny_clip, feats[-1], torch.ones(3, 5), text_fg, text_bg, (6, 6), strategy="x")


def test_gradcam_formula_hand_worked():
    # acts (n=4, D=2) = [[1,0],[0,1],[2,1],[0,0]], grads all [3,-1] -> alpha = [3,-1]
    # sum_c alpha_c A_c = [3, -1, 5, 0] -> ReLU [3, 0, 5, 0] -> min-max [0.6, 0, 1, 0] (1e-7 eps)
    acts = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 0.0]]])
    grads = torch.tensor([[3.0, -1.0]]).expand(4, 2)[None]
    cam = gradcam_from_activations(acts, grads, (2, 2))
    torch.testing.assert_close(cam, torch.tensor([[[0.6, 0.0], [1.0, 0.0]]]), atol=1e-6, rtol=0)


def test_minmax_constant_map_is_zero():
    # (x - min) = 0 everywhere -> 0 / (0 + eps) = 0, no NaN
    out = minmax_normalize(torch.full((2, 3, 3), 0.7), 1e-7, passes=2)
    assert torch.equal(out, torch.zeros(2, 3, 3))


def test_present_pairs_order():
    b, c = present_pairs(torch.tensor([[0, 1, 1], [1, 0, 0]]))
    assert b.tolist() == [0, 0, 1] and c.tolist() == [1, 2, 0]
