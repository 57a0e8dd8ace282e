# AffinityNet on real images (Ahn & Kwak, CVPR 2018; github.com/jiwoon-ahn/psa): affinity head on layer2..layer4
# of a ResNet-50 (ImageNet weights; the paper's trunk is ResNet-38), trained on the confident regions of a frozen
# CAM classifier (model.cam_checkpoint, set by the inheriting config). psa: batch 8, 448 crops, 8 epochs, SGD.
_base_ = ["../../_base_/default_runtime.py", "../../_base_/schedules/adamw_poly.py"]
model = dict(
    type="AffinityNet",
    seeds="cams",
    resnet=dict(arch="resnet50", weights="pretrained/resnet50-0676ba61.pth"),
    radius=5,  # psa's gamma
    walk=dict(
        beta=8, num_iters=256, bg_mode="power", bg_value=16
    ),  # psa's infer_aff.py: beta 8, logt 8, alpha 16
)
loss = dict(bg_weight=0.25, fg_weight=0.25, neg_weight=0.5)  # psa's code
optim = dict(lr=1e-4, head_lr_mult=1.0, weight_decay=1e-4)
sched = dict(warmup_iters=100)
train = dict(batch_size=8, num_workers=8, vis_interval=500, eval_interval=0, eval_split="val")
test = dict(resize_long=None, scales=(1.0,), flip=False)
