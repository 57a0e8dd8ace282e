# WeCLIP+ model: frozen CLIP ViT-B/16 + frozen DINOv2 ViT-S/14 + two fusion heads and a shared decoder + RFM+.
# "doc §n" = docs/official_code_plus.md (the authors' WeCLIP+/ code), "spec §n" = docs/official_code.md (WeCLIP).
# The values are the authors' VOC ones; configs/weclip_plus/coco_*.py sets the COCO differences.
model = dict(
    type="WeCLIPPlus",  # weclip/models/weclip_plus.py
    # The same ImageNet-normalised tensor feeds CLIP and DINOv2 (doc §2.2, spec §1.2); "clip" = CLIP's constants.
    normalize="imagenet",
    norm_constants=dict(
        imagenet=dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),  # spec §1.2
        clip=dict(
            mean=(122.7709383, 116.7460125, 104.09373615), std=(68.5005327, 66.6321579, 70.3231804)
        ),
    ),
    backbone=dict(
        # The authors' shipped configs use OpenAI's ViT-B-16.pt, clip_flag 16 (doc §1.1).
        arch="ViT-B-16-quickgelu",
        weights="pretrained/ViT-B-16.pt",  # OpenAI archive, open_clip file, "hub:<tag>" or "random" (spec §1.1)
        allow_download=False,
        precision="fp32",  # the authors ran CLIP in fp16 on CUDA (doc §1.1, spec §1.1); fp32 is the reference
    ),
    dino=dict(
        # The authors' torch.hub name (doc §2.1): dinov2_vits14 (their default), dinov2_vits14_reg,
        # dinov2_vitb14(_reg), dinov2_vitl14(_reg); built with timm (weclip/models/dino_backbone.py).
        arch="dinov2_vits14",
        # The official LVD-142M file of that variant, as torch.hub caches it (doc §2.1); a timm-layout
        # .safetensors/.pth file, "hub:lvd142m" (local cache; downloads only with allow_download) or "random".
        weights="pretrained/dinov2_vits14_pretrain.pth",
        allow_download=False,
        # Positional-table resize: "official" = the hub code's (bicubic, +0.1 offset, no antialias for the
        # plain models; antialias for _reg), doc §2.3; "timm" = timm's dynamic resampling for every variant.
        pos_interp="official",
        seed=0,  # only for weights="random": the seed of the random DINOv2 (tests, smoke runs)
    ),
    text=dict(template="a clean origami {}."),  # WeCLIP's prompts (doc §1.2, spec §2)
    decoder=dict(
        embed_dim=256,  # both fusion heads and the transformer (doc §3.1, `embedding_dim`)
        num_layers=3,  # `decoder_layer`: 3 with DINOv2 S/B, 5 with L (doc §3.2)
        num_heads=8,  # doc §3.2 (WeCLIP's DecoderTransformer, spec §6.2)
        mlp_ratio=4,  # spec §6.2
        dropout=0.1,  # Dropout2d after each fuse conv (doc §3.1)
        # CLIP head input: only block N-2's output (`all_img_tokens[-1]`, SegFormerHead index=1), doc §1.2, §3.1.
        clip_num_inputs=1,
    ),
    cam=dict(
        norm_eps=1e-7,  # spec §3
        cam_norm_passes=2,  # spec §3 (pytorch_grad_cam's min-max twice)
        # Which forward_blocks output the Grad-CAM's last block runs on (doc §1.2): -2 = block N-3 (the
        # authors' VOC model, `fts_all_stack[-2]`); -1 = block N-2 (their COCO model, and WeCLIP).
        input_index=-2,
        # None = the authors' rule: exp(logit_scale) / 4 for a 24-block CLIP (ViT-L/14), / 1 otherwise (doc §1.1).
        logit_scale_divisor=None,
    ),
    refine=dict(
        rfm_layers=6,  # RFM+ uses the last 6 maps (VOC, B/16); 8 COCO; 12 with L/14 (doc §4.1)
        layer_filter="signed",  # the code's signed difference sum (spec §4.3, doc §4.1)
        filter_eps=1e-5,  # spec §4.3
        sinkhorn_iters=3,  # spec §4.4
        power=2,  # spec §4.4
        # RFM+ box mask (doc §4.2 step 4): "ones" = the authors' VOC model overwrites the box mask by ones
        # inside its DINO-gate branch; "boxes" = CLIP-ES boxes of the ungated CAM (their COCO model).
        box_mask="ones",
        box_threshold=0.4,  # boxes of the static/rfm ablation rows and of box_mask="boxes" (0.7 COCO), spec §4.5
        box_mode="official",  # spec §4.5
        norm_eps=1e-7,  # spec §4.6
        static_layers=8,  # only the "static" rows of tools/eval_pseudo.py (CLIP-ES, spec §4.2): not in WeCLIP+
    ),
    # background (1 - max)^1 (`cam_bg_thres = 1`), crop padding labelled as the authors do (spec §5)
    pseudo_label=dict(bg_power=1, ignore_padding=False),
    # PAR (`WeCLIP_Plus/PAR.py` is WeCLIP's, doc §4.2; spec §5.1)
    par=dict(
        num_iter=20, dilations=(1, 2, 4, 8, 12, 24), temperature=0.3, pos_weight=0.01, eps=1e-8
    ),
)

loss = dict(
    # L = 1 L_seg + 0.1 L_aff + 0.1 (L_cross_clip + L_cross_dino) + 1 L_dice (doc §5, `dist_clip_voc.py: train`)
    seg_weight=1.0,
    aff_weight=0.1,
    cross_weight=0.1,
    dice_weight=1.0,
    aff_radius=8,  # `--radius 8` (doc §5.2, spec §7.2)
    ignore_index=255,
    # The authors' Dice counts the predictions at ignored pixels in its denominator (doc §5.4); their online
    # pseudo-labels hold no ignored pixel, so it only matters with model.pseudo_label.ignore_padding. False = clean.
    dice_ignore_in_denominator=True,
    # Self-training (doc §5.5): their `if n_iter > 18000` on the 0-based step index first holds at 1-indexed
    # iteration 18,002 (VOC; COCO `n_iter > 40000` -> 40,002). None = never.
    self_training_start_iter=18002,
    self_training_threshold=0.75,  # strict `conf > 0.75` (doc §5.5)
    self_training_keep_ignore=False,  # the authors replace every confident pixel (doc §5.5)
)
