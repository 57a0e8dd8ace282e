# Stage 3 of the CNN baseline on the toy world: an FCN trained on the exported pseudo-masks of AffinityNet.
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
    # An FCN on the classifier's trunk layout (ResNet-18 at 1/8 width, no stem pool, output stride 8: a 14x14 grid
    # on 112 px images), random init. U-Nets from scratch learn the toy shapes far more slowly: on the ground truth,
    # 1,000 steps of batch 8 (this schedule) reach val mIoU 84.1 with this FCN (85 s), 23.8 with a U-Net of width 8 /
    # depth 3 (170 s), 38.1 with width 8 / depth 4 (320 s), 25.2 with width 16 / depth 4 (690 s) (docs/baselines.md).
    arch="fcn_resnet",
    fcn=dict(arch="resnet18", weights="random", base_width=8, stem_pool=False, output_stride=8),
)
loss = dict(_delete_=True, kind="ce")

optim = dict(lr=2e-3, head_lr_mult=1.0, weight_decay=0.0)
sched = dict(warmup_iters=50)
# 3,000 steps (~6 min on one thread): the walk's pseudo-masks are noisier than the ground truth and train slower; on
# toy val the FCN trained on them reaches 31.5 mIoU after a 1,000-step schedule, 47.4 / 54.7 / 56.2 after 1,000 /
# 2,000 / 3,000 steps of this one
train = dict(
    max_iters=3000,
    batch_size=8,
    num_workers=0,
    log_interval=50,
    vis_interval=0,
    ckpt_interval=1000,
    eval_interval=0,
    eval_split="val",
)
test = dict(resize_long=None, scales=(1.0,), flip=False)
