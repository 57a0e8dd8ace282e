# WeCLIP+ on VOC with CLIP ViT-L/14 + DINOv2 ViT-S/14: the authors' `clip_flag: 14` path (doc §1.1). They ship
# no config for it (only the switch and the layer counts); their COCO script cannot run it (doc §1.1), so there
# is no COCO L/14 config. Otherwise voc_dinov2_s.py.
#   python tools/train.py configs/weclip_plus/voc_clip_l14_dinov2_s.py
# A 320 crop: CLIP sees its top-left 308x308 block (22x22 patches, conv1 drops 12 px), DINOv2 the whole crop
# resized to 308, labels and PAR stay at 320 (doc §1.1, §2.2).
_base_ = ["./voc_dinov2_s.py"]
model = dict(
    backbone=dict(
        arch="ViT-L-14-quickgelu",  # 24 blocks, width 1024: the CLIP head reads 1024 channels (doc §1.1)
        weights="pretrained/ViT-L-14.pt",  # OpenAI's archive
    ),
    # logit scale exp(s)/4 for the 24-block tower: cam.logit_scale_divisor=None applies it (doc §1.1)
    refine=dict(rfm_layers=12),  # the last 12 maps with clip_flag 14 (doc §4.1)
)
