# Runtime settings shared by every config.
# Inference (spec §9): long side -> 512, scales [1.0, 0.75] with horizontal flip, mean of raw logits.
test = dict(
    resize_long=512,  # spec §9
    scales=(1.0, 0.75),  # spec §9 (the first scale is the reference size for merging)
    flip=True,  # spec §9
    # DenseCRF (spec §9.3, AFA's parameters): off in the authors' test_msc_flip_voc.py, on in their
    # test_msc_flip_seg.py (spec §9.1); tools/infer.py --crf turns it on
    crf=dict(
        iter_max=10,  # mean-field iterations
        pos_xy_std=3,  # Gaussian pairwise sxy
        pos_w=3,  # Gaussian pairwise compat
        bi_xy_std=64,  # bilateral sxy
        bi_rgb_std=5,  # bilateral srgb
        bi_w=4,  # bilateral compat
        prob_clip=1e-5,  # unary = -log(clip(softmax, 1e-5, 1)) (spec §9)
    ),
)
work_dir = None  # CLI --work-dir > this > work_dirs/<config stem>
