# Data settings shared by VOC and COCO (spec §8 augmentation, §1.2 normalisation).
data = dict(
    # Image normalisation fed to CLIP (spec §1.2, §11 row 8): the authors use ImageNet statistics on 0-255
    # RGB ("imagenet", faithful); "clip" uses CLIP's own constants (what CLIP was trained with).
    normalize="imagenet",
    norm_constants=dict(
        imagenet=dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),  # spec §1.2
        # CLIP's (0.48145466, 0.4578275, 0.40821073) / (0.26862954, 0.26130258, 0.27577711), x255
        clip=dict(mean=(122.7709383, 116.7460125, 104.09373615), std=(68.5005327, 66.6321579, 70.3231804)),
    ),
    crop_size=320,  # random 320x320 crop, zero padding at a random offset when smaller (spec §8 step 4)
    scale_range=(0.5, 2.0),  # random rescale ratio ~ U(0.5, 2.0), PIL bilinear (spec §8 step 2)
    flip_prob=0.5,  # horizontal flip (spec §8 step 3)
    ignore_index=255,  # mask value of ignored pixels (spec §10)
    # File layout under data.root (weclip/data/voc.py): <img_dir>/<name><img_suffix>,
    # <mask_dir>/<name><mask_suffix> (COCO adds a train/ or val/ level, spec §10); mask_dir is per dataset.
    img_dir="JPEGImages",
    img_suffix=".jpg",  # VOC/COCO JPEGs; the toy world uses ".png"
    mask_suffix=".png",
    mask_free_splits=("test",),  # splits without masks: evaluation items carry no "mask" (VOC test)
)
