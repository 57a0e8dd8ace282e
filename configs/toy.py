# WeCLIP on the synthetic toy world (weclip/data/toy.py) with the tiny CLIP trained on it
# (weclip/assets/toy_clip/). Runs end to end on CPU:
#   python tools/make_toy_data.py                # writes data/toy (seconds)
#   python tools/train.py configs/toy.py
# Same _base_ files as configs/voc.py; everything below overrides them for the toy world, with the reason.
_base_ = [
    "_base_/models/weclip_vitb16.py",
    "_base_/datasets/voc12.py",
    "_base_/schedules/adamw_poly.py",
    "_base_/default_runtime.py",
]

_image_size = 112  # toy images are 112x112: a 14x14 patch grid with the tiny CLIP's 8 px patches

# Generator parameters (tools/make_toy_data.py; weclip.data.toy.ToyWorldConfig). Changing them changes the
# dataset, which tools/make_toy_data.py then regenerates.
toy = dict(
    seed=0,  # same seed -> byte-identical dataset
    num_train=1200,  # small enough to generate in seconds on a fresh machine
    num_val=300,
    image_size=_image_size,
    num_classes=4,  # circle, square, triangle, cross: few, very distinct shapes
    min_objects=1,
    max_objects=2,  # 1-2 large objects keep the CAMs of a tiny CLIP separable
    min_size=0.28,  # object diameter as a fraction of the image side
    max_size=0.55,
)

data = dict(
    name="toy",  # dataset name in reports
    type="folder",  # the toy world is written in the VOC layout
    root="data/toy",  # written by tools/make_toy_data.py (git-ignored)
    split_dir="data/toy",  # train.txt, val.txt and cls_labels.txt sit next to the images
    img_dir="JPEGImages",
    mask_dir="SegmentationClassAug",
    img_suffix=".png",  # lossless PNG instead of VOC's JPEG: the toy labels have exact edges
    mask_suffix=".png",
    train_split="train",
    val_split="val",
    num_classes=5,  # background + 4 shapes
    class_names=("background", "circle", "square", "triangle", "cross"),
    # The tiny CLIP was trained with exactly these prompts (template below); other names are unknown to it.
    prompt_class_names=("circle", "square", "triangle", "cross"),
    # Background prompts = the toy background textures; the tiny CLIP learned them from background-only
    # images, so they compete with the shapes in the Grad-CAM softmax as VOC's ground/sky/... do (spec §2).
    prompt_bg_names=("plain", "stripes", "gradient", "noise"),
    crop_size=_image_size,  # crops as large as the images: the tiny CLIP's positional table is 16x16
    scale_range=(0.75, 1.5),  # milder than VOC's (0.5, 2.0): objects fill 28-55% of a 112 px image
)

model = dict(
    backbone=dict(
        # open_clip.CLIP kwargs of the tiny CLIP (weclip/assets/toy_clip/README.md). pool_type "avg" =
        # proj(mean of ln_post(patch tokens)), the image embedding WeCLIP uses (spec §1.6); QuickGELU as OpenAI.
        arch=dict(
            _delete_=True,  # replaces the base's architecture name (a string) by a kwargs dict
            embed_dim=64,
            quick_gelu=True,
            vision_cfg=dict(
                image_size=_image_size,
                patch_size=8,
                width=64,
                layers=5,
                head_width=16,
                mlp_ratio=4.0,
                pool_type="avg",
            ),
            text_cfg=dict(
                context_length=16, vocab_size=49408, width=64, heads=2, layers=2, mlp_ratio=4.0
            ),
        ),
        weights="weclip/assets/toy_clip/toy_clip.safetensors",  # committed; trained by tools/train_toy_clip.py
    ),
    decoder=dict(
        embed_dim=64,  # 256 in the paper; the toy decoder only has to fit 5 classes on CPU
        num_layers=1,  # 3 in the paper (spec §6.2); one layer trains in minutes on CPU
        num_heads=4,  # 4 heads x 16 dims
    ),
    refine=dict(
        # The tiny CLIP has 5 blocks -> 4 attention maps from forward_blocks (VOC: 11 maps, 8 static / 6 RFM).
        static_layers=3,
        rfm_layers=3,
        rfm_start_iter=150,  # RFM once the decoder affinity carries some structure (10% of the schedule)
        box_threshold=0.4,  # VOC's value (spec §4.5); toy objects are compact like VOC's
    ),
)

optim = dict(
    lr=4e-4,  # effective decoder lr 4e-3 (x head_lr_mult 10): the short toy schedule learns faster with it
)

train = dict(
    max_iters=1500,  # ~6 min on 2 CPU cores with one thread (tools/demo.py); tuned on toy val
    batch_size=8,  # 8 crops of 112 px cost less than VOC's 4 of 320 px
    num_workers=0,  # images are tiny; workers would cost more than they save on a 2-core machine
    log_interval=50,
    vis_interval=500,
    ckpt_interval=500,  # an interrupted demo resumes from the last one
    eval_interval=750,
    eval_split="val",  # toy val has masks and is disjoint from train (VOC validates on train, spec §8)
    eval_max_images=None,
)

test = dict(
    # Infer at 1.5x the training crop, as VOC infers at 512 for 320 crops (spec §9); 168 is still inside the
    # training scale range (0.75-1.5) and gives the decoder a 21x21 grid. Measured on toy val (MS+flip):
    # 0.600 at 112, 0.628 at 168, 0.554 at 224 with the same checkpoint (previous tiny CLIP weights).
    resize_long=int(1.5 * _image_size),
)
del _image_size  # helper only; keep it out of the resolved config
