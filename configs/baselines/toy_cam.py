# Stage 1 of the CNN baseline on the toy world: a CAM classifier trained from scratch on image-level labels.
#   python tools/make_toy_data.py                                   # data/toy (configs/toy.py's world)
#   python tools/train.py configs/baselines/toy_cam.py --device cpu
#   python tools/sweep_cams.py configs/baselines/toy_cam.py work_dirs/toy_cam/checkpoints/iter_*.pth
# The toy world and its data section are configs/toy.py's (the same images, splits and labels as WeCLIP's toy
# run); everything model-specific is replaced.
_base_ = ["../toy.py"]

model = dict(
    _delete_=True,
    type="CAMClassifier",
    arch="resnet",
    resnet=dict(
        arch="resnet18",
        # from scratch: no ImageNet weights on the toy world
        weights="random",
        # 1/8 of torchvision's width: 18 layers that train on one CPU thread in minutes
        base_width=8,
        # No stem max-pool and output stride 8 (a 14x14 CAM grid on 112 px images): the phase-1 recipe
        # (docs/baselines.md); with the pool the CAMs end lower (measured below).
        stem_pool=False,
        output_stride=8,
    ),
    # replaced by the sweep's best threshold (tools/baseline_pipeline.py passes it on)
    pseudo=dict(threshold=0.3, bg_mode="threshold", scales=(1.0,), flip=False),
    # Seeds CAM > 0.6, grown into 4-adjacent cells whose mean-subtracted layer1 features (56x56, resized to the
    # CAM grid) have a cosine > 0.8 with the region's mean. Measured on the first 100 toy train images (CAM 49.0):
    # layer4 features 47.0, layer2 53.4, layer1 60.3; raw (uncentred) layer4 cosines grow everywhere (34.6).
    region_growing=dict(
        seed_threshold=0.6, sim_threshold=0.8, num_iters=10, connectivity=4, stage=1, center=True
    ),
)
# 1-2 shapes per image: multi-label BCE
loss = dict(_delete_=True, kind="multilabel")

# A random-init ResNet-18 on 112 px toy images (measured on toy train, docs/baselines.md): the loss stays at chance
# (~0.66) for ~900 steps, then falls (0.40 at 1,200 steps, 0.30 at 1,350). Best-threshold CAM mIoU after 1,500
# steps: 49.4 with this recipe; 40.1 with the stem pool, configs/toy.py's 0.75-1.5 rescaling and the poly decay.
# flips and crops only, no rescaling
data = dict(scale_range=(1.0, 1.0))
# AdamW without weight decay = Adam (the phase-1 recipe), constant lr after the warm-up
optim = dict(lr=2e-3, head_lr_mult=1.0, weight_decay=0.0)
sched = dict(warmup_iters=50, power=0.0)
train = dict(
    max_iters=1500,
    batch_size=16,
    num_workers=0,
    log_interval=50,
    vis_interval=0,
    # the checkpoints to sweep (thresholds x checkpoints)
    ckpt_interval=500,
    # tools/sweep_cams.py and tools/eval_pseudo.py evaluate afterwards
    eval_interval=0,
    eval_split="val",
)
# tools/infer.py: the CAMs at the image size, as the pseudo-labels
test = dict(resize_long=None, scales=(1.0,), flip=False)
