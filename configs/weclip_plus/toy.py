# WeCLIP+ on the synthetic toy world with the toy CLIP of configs/toy.py (committed weights) beside a tiny
# random DINOv2 (timm ViT kwargs; drawn from model.dino.seed, so training and inference build the same one).
# Runs end to end on CPU:
#   python tools/make_toy_data.py                       # writes data/toy (seconds)
#   python tools/train.py configs/weclip_plus/toy.py
# Data, schedule and runtime are configs/toy.py's; the model section is WeCLIP+'s (configs/_base_/models/
# weclip_plus_vitb16.py documents every key), sized for the toy world as below.
_base_ = ["../toy.py"]

model = dict(
    _delete_=True,  # replaces configs/toy.py's WeCLIP model section
    type="WeCLIPPlus",
    normalize={{_base_.model.normalize}},
    norm_constants={{_base_.model.norm_constants}},
    backbone={{_base_.model.backbone}},  # the toy CLIP: 5 blocks of width 64, 8 px patches
    text={{_base_.model.text}},
    dino=dict(
        # A 2-block DINOv2-layout ViT of width 32 (14 px patches, LayerScale, a 8x8 positional table for 112 px):
        # a random feature extractor beside the trained toy CLIP. No weights file exists for it.
        arch=dict(img_size=112, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0),
        weights="random",
        seed=0,
    ),
    decoder=dict(embed_dim=64, num_layers=1, num_heads=4),  # configs/toy.py's decoder size
    cam=dict(
        # The toy CLIP was trained with Grad-CAM on block N-2's output (WeCLIP's path, tools/train_toy_clip.py);
        # -2 (the authors' VOC choice) would feed its last block an input it never saw.
        input_index=-1,
    ),
    refine=dict(
        rfm_layers=3,  # 5 blocks -> 5 attention maps (VOC B/16 uses 6 of 12)
        static_layers=3,  # configs/toy.py's static refinement (eval_pseudo rows only)
        box_mask="ones",  # the authors' VOC setting
        box_threshold=0.4,
    ),
)
loss = dict(
    # Self-training over the last 40% of the toy schedule (1,500 iterations), as VOC's 18,002 of 30,000.
    self_training_start_iter=901,
)
