# Optimisation and schedule (spec §8). Launch command for the paper setting:
#   tools/dist_train.sh configs/voc.py 4     (4 GPUs x 1 image = total batch 4, as the authors' 1 GPU x 4)
optim = dict(
    type="AdamW",
    # The authors' config says lr 2e-4, but the only non-empty param group uses 10x: every trained weight gets
    # lr = 2e-4 * 10 = 2e-3 (spec §8, §11 row 1, WeCLIP issue #17). Effective decoder lr: 2e-3.
    lr=2e-4,
    head_lr_mult=10.0,
    betas=(0.9, 0.999),  # spec §8
    eps=1e-8,  # spec §8
    weight_decay=0.01,  # decoupled, on all decoder params (spec §8, §11 row 2)
)
sched = dict(
    warmup_iters=50,  # linear warm-up over steps t < 50 (spec §8)
    warmup_ratio=1e-6,  # lr(t) = base * [1 - (1 - t/50) * (1 - 1e-6)] during warm-up (spec §8)
    power=1.0,  # then base * (1 - t / max_iters) ** 1.0, no re-basing (spec §8, App. C.9)
)
train = dict(
    max_iters=30000,  # VOC (spec §8); COCO 80,000
    batch_size=4,  # TOTAL batch over all GPUs; per-GPU batch = batch_size / world size (spec §8)
    seed=1,  # setup_seed(1) in the authors' scripts (spec §8)
    num_workers=4,  # data-loader workers per process (the authors used 10)
    amp=False,  # bf16 autocast of the frozen CLIP on GPU (spec §1.1 note); --amp turns it on
    compile=False,  # torch.compile the decoder (nn.Module.compile(); not bitwise eager, docs/speed.md)
    log_interval=50,  # iterations between log lines / TensorBoard scalars
    vis_interval=500,  # iterations between TensorBoard image panels (CAM, pseudo label, prediction)
    ckpt_interval=2000,  # iterations between checkpoints (the authors saved at eval points, spec §8)
    eval_interval=2000,  # in-training validation every 2,000 iterations (spec §8)
    # The authors validate on VOC *train* (1,464 images) in train mode (spec §8, §12.7); we validate in eval
    # mode under no_grad except for Grad-CAM. eval_max_images caps the images per validation (None = all).
    eval_split="train",
    eval_max_images=None,
    # Debugging aid for multi-GPU runs: all-gather a decoder checksum after every step and stop with an error
    # if the ranks' weights differ (costs one all-gather per iteration).
    check_sync=False,
)
