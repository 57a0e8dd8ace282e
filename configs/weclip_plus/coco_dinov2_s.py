# WeCLIP+ on MS COCO 2014 with CLIP ViT-B/16 + DINOv2 ViT-S/14, the authors' default
# (configs/coco_attn_reg.yaml and scripts/dist_clip_coco.py of their WeCLIP+/ folder; doc §n =
# docs/official_code_plus.md).
#   tools/dist_train.sh configs/weclip_plus/coco_dinov2_s.py 4      (total batch 8: 2 images per GPU)
#   python tools/infer.py configs/weclip_plus/coco_dinov2_s.py CKPT --split val     (no CRF on COCO, doc §7)
# Data, schedule and runtime are WeCLIP's COCO files (configs/coco.py); below only what WeCLIP+ changes.
_base_ = [
    "../_base_/models/weclip_plus_vitb16.py",
    "../_base_/datasets/coco14.py",
    "../_base_/schedules/adamw_poly.py",
    "../_base_/default_runtime.py",
]
model = dict(
    # COCO's Grad-CAM runs the last block on block N-2's output (doc §1.2)
    cam=dict(input_index=-1),
    refine=dict(
        rfm_layers=8,  # the last 8 maps on COCO (doc §4.1)
        box_mask="boxes",  # COCO keeps the CLIP-ES boxes of the ungated CAM (doc §4.2 step 4)
        box_threshold=0.7,  # `scoremap2bbox(threshold=0.7)` (doc §4.2)
    ),
)
loss = dict(
    self_training_start_iter=40002,  # `n_iter > 40000` on the 0-based index (doc §5.5)
)
optim = dict(lr=2e-5, head_lr_mult=10.0)  # effective 2e-4, as VOC (doc §6)
train = dict(
    max_iters=80000,  # doc §6
    batch_size=8,  # `samples_per_gpu: 8` on one GPU (doc §6)
    eval_interval=0,  # no in-training validation on COCO (doc §6)
    ckpt_interval=10000,  # the authors saved at 50k, 60k, 70k, 80k (doc §6)
)
test = dict(scales=(1.0, 1.5))  # doc §7 (flip, long side 512)
