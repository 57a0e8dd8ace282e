# Stage 1 on real images: ResNet-50 (ImageNet weights from a local torchvision file) + GAP + 1x1 head, IRN's CAM
# network (output stride 16, https://arxiv.org/abs/1904.05044). The dataset section (and its crop) comes from the config
# that inherits this one. Optimiser: the library's AdamW (IRN used SGD, lr 0.1 for the head, 5 epochs).
_base_ = ["../../_base_/default_runtime.py", "../../_base_/schedules/adamw_poly.py"]
model = dict(
    type="CAMClassifier",
    arch="resnet",
    resnet=dict(
        arch="resnet50",
        weights="pretrained/resnet50-0676ba61.pth",  # torchvision IMAGENET1K_V2 ResNet-50, a local file
        output_stride=16,  # IRN: layer4 unstrided
        dilate=True,
    ),
    pseudo=dict(
        threshold=0.15,  # IRN's cam_eval_thres; tools/sweep_cams.py picks it per checkpoint
        scales=(1.0, 0.5, 1.5, 2.0),  # IRN / AffinityNet multi-scale CAMs
        flip=True,
    ),
)
loss = dict(kind="multilabel")  # VOC; Oxford-IIIT Pet configs set "single"
optim = dict(lr=1e-4, head_lr_mult=1.0, weight_decay=1e-4)
sched = dict(warmup_iters=100)
train = dict(batch_size=16, num_workers=8, vis_interval=500, eval_interval=0, eval_split="val")
# tools/infer.py on the CAMs: the model's own multi-scale CAMs (model.pseudo) at the image size, no test-time MS
test = dict(resize_long=None, scales=(1.0,), flip=False)
