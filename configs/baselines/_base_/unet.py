# Second stage / upper bound on real images: the U-Net (width 32, depth 4) on exported pseudo-masks or the ground
# truth (data.train_mask_dir, set by the inheriting config).
_base_ = ["../../_base_/default_runtime.py", "../../_base_/schedules/adamw_poly.py"]
model = dict(type="SegNet", arch="unet", unet=dict(width=32, depth=4))
loss = dict(kind="ce")  # "focal" (gamma 2) is the other option
optim = dict(lr=1e-3, head_lr_mult=1.0, weight_decay=1e-4)
sched = dict(warmup_iters=100)
train = dict(
    max_iters=10000,
    batch_size=16,
    num_workers=8,
    ckpt_interval=2000,
    eval_interval=0,
    eval_split="val",
)
test = dict(resize_long=None, scales=(1.0,), flip=True)
