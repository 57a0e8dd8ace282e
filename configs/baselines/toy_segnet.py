# Stage 3 of the CNN baseline on the toy world: a U-Net trained on the exported pseudo-masks of AffinityNet.
#   python tools/eval_pseudo.py configs/baselines/toy_affinitynet.py AFFINITY_CKPT --split train --rows rw \
#       --export-dir data/toy/pseudo_masks
#   python tools/train.py configs/baselines/toy_segnet.py --device cpu
#   python tools/infer.py configs/baselines/toy_segnet.py work_dirs/toy_segnet/checkpoints/iter_1000.pth
_base_ = ["../toy.py"]

data = dict(
    # exported pseudo-masks (tools/eval_pseudo.py --export-dir DIR writes DIR/rw/<name>.png): a folder under
    # data.root, or an absolute path (tools/baseline_pipeline.py passes its own)
    train_mask_dir="pseudo_masks/rw",
)
model = dict(
    _delete_=True,
    type="SegNet",
    arch="unet",
    # 8-16-32-64 channels, 3 poolings: a 112 px U-Net that trains on CPU
    unet=dict(width=8, depth=3),
)
loss = dict(_delete_=True, kind="ce")

optim = dict(lr=2e-3, head_lr_mult=1.0, weight_decay=0.0)
sched = dict(warmup_iters=50)
train = dict(
    max_iters=1000,
    batch_size=8,
    num_workers=0,
    log_interval=50,
    vis_interval=0,
    ckpt_interval=1000,
    eval_interval=0,
    eval_split="val",
)
test = dict(resize_long=None, scales=(1.0,), flip=False)
