# Data settings shared by VOC and COCO (spec §8 augmentation). Images reach the model as uint8 RGB; the
# model normalises them (model.normalize).
data = dict(
    crop_size=320,  # random 320x320 crop, zero padding at a random offset when smaller (spec §8 step 4)
    scale_range=(0.5, 2.0),  # random rescale ratio ~ U(0.5, 2.0), PIL bilinear (spec §8 step 2)
    flip_prob=0.5,  # horizontal flip (spec §8 step 3)
    ignore_index=255,  # mask value of ignored pixels (spec §10)
    # File layout under data.root (weclip/data/dataset.py): <img_dir>/<name><img_suffix>,
    # <mask_dir>/<name><mask_suffix> (COCO adds a train/ or val/ level, spec §10); mask_dir is per dataset.
    img_dir="JPEGImages",
    img_suffix=".jpg",  # VOC/COCO JPEGs; the toy world uses ".png"
    mask_suffix=".png",
    mask_free_splits=("test",),  # splits without masks: evaluation items carry no "mask" (VOC test)
)
