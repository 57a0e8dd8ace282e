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
        weights="random",  # from scratch: no ImageNet weights on the toy world
        base_width=8,  # 1/8 of torchvision's width: 18 layers that train on one CPU thread in minutes
        # No stem max-pool and output stride 8 (a 14x14 CAM grid on 112 px images): with the pool a
        # random-init ResNet-18 does not localise the toy shapes (docs/baselines.md, measured at 64 px).
        stem_pool=False,
        output_stride=8,
    ),
    pseudo=dict(
        threshold=0.3
    ),  # replaced by the sweep's best threshold (tools/baseline_pipeline.py)
)
loss = dict(_delete_=True, kind="multilabel")  # 1-2 shapes per image: multi-label BCE

optim = dict(
    lr=2e-3, head_lr_mult=1.0, weight_decay=0.0
)  # AdamW without decay = Adam (phase-1 recipe)
sched = dict(warmup_iters=50)
train = dict(
    max_iters=1500,
    batch_size=16,
    num_workers=0,
    log_interval=50,
    vis_interval=0,
    ckpt_interval=500,  # checkpoints to sweep (thresholds x checkpoints)
    eval_interval=0,  # tools/sweep_cams.py and tools/eval_pseudo.py evaluate afterwards
    eval_split="val",
)
test = dict(
    resize_long=None, scales=(1.0,), flip=False
)  # the CAMs at the image size, as the pseudo-labels
