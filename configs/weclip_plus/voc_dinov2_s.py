# WeCLIP+ on PASCAL VOC 2012 (train_aug) with CLIP ViT-B/16 + DINOv2 ViT-S/14, the authors' default
# (configs/voc_attn_reg.yaml of their WeCLIP+/ folder; "doc §n" = docs/official_code_plus.md).
#   1 GPU:  python tools/train.py configs/weclip_plus/voc_dinov2_s.py
#   4 GPUs: tools/dist_train.sh configs/weclip_plus/voc_dinov2_s.py 4     (total batch stays 4)
# Inference as the authors (scales 1.0 and 1.5 + flip, DenseCRF on for VOC, doc §7):
#   python tools/infer.py configs/weclip_plus/voc_dinov2_s.py CKPT --crf --crf-workers 8
# Data, schedule and runtime are WeCLIP's files (configs/voc.py); below only what WeCLIP+ changes.
_base_ = [
    "../_base_/models/weclip_plus_vitb16.py",
    "../_base_/datasets/voc12.py",
    "../_base_/schedules/adamw_poly.py",
    "../_base_/default_runtime.py",
]
optim = dict(
    # `learning_rate: 2e-5` (comment `#2e-4`, WeCLIP's); the only non-empty param group (both heads and the
    # decoder) gets 10x: effective lr 2e-4 (doc §6).
    lr=2e-5,
    head_lr_mult=10.0,
)
# Schedule (doc §6): 30,000 iterations, batch 4, warm-up 50, poly 1.0, validation every 2,000 on VOC train:
# the values of configs/_base_/schedules/adamw_poly.py.
# `test_scales=[1, 1.5]` (comment `#[1, 0.75]`, WeCLIP's), flip, long side 512 (doc §7)
test = dict(scales=(1.0, 1.5))
