"""The pseudo-label pipeline end to end on a tiny random CLIP (spec §3-§5, §4.2 mode switch)."""

import os

import pytest
import torch
import torch.nn.functional as F

from weclip.cam.gradcam import gradcam
from weclip.config import load_config
from weclip.errors import ConfigError
from weclip.refine.boxes import box_masks
from weclip.refine.par import PAR
from weclip.refine.pipeline import PseudoLabelPipeline, rfm_active
from weclip.refine.propagate import propagate_cams
from weclip.refine.pseudo_label import pack_scores, scores_to_labels
from weclip.refine.transition import (
    patch_attention,
    rfm_affinity,
    static_affinity,
    transition_matrix,
)

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "voc.py")


def _batch(tiny_clip, seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, size, size, generator=g)
    feats, attns = tiny_clip.forward_blocks(images)
    text_fg = F.normalize(torch.randn(6, tiny_clip.embed_dim, generator=g), dim=-1)
    text_bg = F.normalize(torch.randn(4, tiny_clip.embed_dim, generator=g), dim=-1)
    cls_labels = torch.tensor(
        [[0, 1, 0, 0, 1, 1], [0, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0]], dtype=torch.float32
    )
    n = (size // tiny_clip.patch_size) ** 2
    aff = torch.sigmoid(torch.randn(3, n, n, generator=g) * 3)
    return images, cls_labels, feats, attns, text_fg, text_bg, aff


def _pipeline(**kw):
    # the tiny CLIP has 3 blocks -> 3 attention maps: static uses all 3, the RFM the last 2
    args = dict(static_layers=3, rfm_layers=2, par=PAR(num_iter=5))
    args.update(kw)
    return PseudoLabelPipeline(**args)


GRID = (6, 6)  # 48 px / 8 px patches


def test_rfm_active_switch():
    # 1-indexed training iterations; None = validation/inference, always the RFM (spec §4.2)
    assert rfm_active(None, 9145)
    assert not rfm_active(9144, 9145)
    assert rfm_active(9145, 9145)
    assert rfm_active(1, 1)
    with pytest.raises(ValueError, match="1-indexed"):
        rfm_active(0, 9145)


@pytest.mark.parametrize("use_rfm", [False, True])
def test_pipeline_equals_per_image_composition(tiny_clip, use_rfm):
    images, cls_labels, feats, attns, text_fg, text_bg, aff = _batch(tiny_clip)
    pipeline = _pipeline()
    out = pipeline(
        tiny_clip,
        images,
        cls_labels,
        feats,
        attns,
        GRID,
        text_fg,
        text_bg,
        aff=aff,
        use_rfm=use_rfm,
    )
    assert out["cams"].shape == (6, 6, 6) and out["cams_refined"].shape == (6, 48, 48)
    assert out["batch_index"].tolist() == [0, 0, 0, 1, 2, 2]
    assert out["class_index"].tolist() == [1, 4, 5, 2, 0, 3]
    # the same building blocks, one image at a time
    labels = []
    for i in range(3):
        cam = gradcam(
            tiny_clip, feats[-1][i : i + 1], cls_labels[i : i + 1], text_fg, text_bg, (6, 6)
        )
        attn_i = [a[i : i + 1] for a in attns]
        if use_rfm:
            affinity, _ = rfm_affinity(patch_attention(attn_i, cam.attn_last, 2), aff[i : i + 1])
        else:
            affinity = static_affinity(patch_attention(attn_i, cam.attn_last, 3))
        trans = transition_matrix(affinity)
        masks, _ = box_masks(cam.cams, 0.4, "official")
        refined, _ = propagate_cams(trans, cam.cams, masks, cam.batch_index, (48, 48))
        sel = out["batch_index"] == i
        torch.testing.assert_close(out["cams"][sel], cam.cams, atol=1e-5, rtol=0)
        # the propagated maps of this random tiny CLIP are nearly flat (spread ~1e-3), so the
        # min-max magnifies the ~1e-7 differences between batched and single-image matmuls by ~1e3
        torch.testing.assert_close(out["cams_refined"][sel], refined, atol=2e-4, rtol=0)
        scores, keys = pack_scores(refined, cam.batch_index, cam.class_index, 1)
        labels.append(scores_to_labels(pipeline.par(images[i : i + 1], scores), keys))
    agreement = (out["pseudo_labels"] == torch.cat(labels)).float().mean().item()
    assert agreement > 0.999  # argmax ties could flip on float rounding; none expected here
    for i in range(3):
        present = {0} | {c + 1 for c in torch.nonzero(cls_labels[i]).flatten().tolist()}
        assert set(out["pseudo_labels"][i].unique().tolist()) <= present


def test_static_and_rfm_differ_and_rfm_needs_affinity(tiny_clip):
    images, cls_labels, feats, attns, text_fg, text_bg, aff = _batch(tiny_clip, seed=1)
    pipeline = _pipeline()
    static = pipeline(
        tiny_clip, images, cls_labels, feats, attns, GRID, text_fg, text_bg, aff=aff, use_rfm=False
    )
    rfm = pipeline(
        tiny_clip, images, cls_labels, feats, attns, GRID, text_fg, text_bg, aff=aff, use_rfm=True
    )
    # the initial CAMs do not depend on the mode
    torch.testing.assert_close(static["cams"], rfm["cams"])
    assert not torch.allclose(static["cams_refined"], rfm["cams_refined"])
    with pytest.raises(ValueError, match="aff"):
        pipeline(
            tiny_clip,
            images,
            cls_labels,
            feats,
            attns,
            GRID,
            text_fg,
            text_bg,
            aff=None,
            use_rfm=True,
        )


def test_output_size_and_ignore_padding(tiny_clip):
    images, cls_labels, feats, attns, text_fg, text_bg, aff = _batch(tiny_clip, seed=2)
    valid = torch.ones(3, 40, 56, dtype=torch.bool)
    valid[:, :, 50:] = False
    pipeline = _pipeline(ignore_padding=True)
    out = pipeline(
        tiny_clip,
        images,
        cls_labels,
        feats,
        attns,
        GRID,
        text_fg,
        text_bg,
        out_size=(40, 56),
        valid=valid,
    )
    assert out["cams_refined"].shape == (6, 40, 56) and out["pseudo_labels"].shape == (3, 40, 56)
    assert torch.all(out["pseudo_labels"][:, :, 50:] == 255) and not torch.any(
        out["pseudo_labels"][:, :, :50] == 255
    )


def test_from_config_reads_the_sections():
    cfg = load_config(CONFIG)
    pipeline = PseudoLabelPipeline.from_config(cfg.model)
    assert pipeline.static_layers == cfg.model.refine.static_layers == 8
    assert pipeline.rfm_layers == cfg.model.refine.rfm_layers
    assert pipeline.box_threshold == cfg.model.refine.box_threshold
    assert pipeline.cam_norm_passes == cfg.model.cam.cam_norm_passes
    assert pipeline.par.num_iter == cfg.model.par.num_iter and pipeline.par.dilations == tuple(
        cfg.model.par.dilations
    )
    # a typo is refused once, when the config is loaded (the schema), not by every module
    with pytest.raises(ConfigError, match="unknown config key 'model.refine.box_treshold'"):
        load_config(CONFIG, {"model.refine": {"box_treshold": 0.5}})
