# Second stage / upper bound on VOC: torchvision's DeepLabV3-ResNet50 (output stride 8), ImageNet trunk from a local
# file, trained on exported pseudo-masks or the ground truth (data.train_mask_dir, set by the inheriting config).
_base_ = ["../../_base_/default_runtime.py", "../../_base_/schedules/adamw_poly.py"]
model = dict(
    type="SegNet",
    arch="deeplabv3_resnet50",
    deeplab=dict(backbone_weights="pretrained/resnet50-0676ba61.pth"),
)
loss = dict(kind="ce")
optim = dict(lr=1e-4, head_lr_mult=1.0, weight_decay=1e-4)
sched = dict(warmup_iters=200)
train = dict(
    max_iters=20000,
    batch_size=16,
    num_workers=8,
    ckpt_interval=4000,
    eval_interval=0,
    eval_split="val",
)
# the library's VOC inference (spec §9): long side 512, scales 1.0 and 0.75, flip
