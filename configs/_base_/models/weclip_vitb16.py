# WeCLIP model: frozen CLIP ViT-B/16 + fusion/transformer decoder + pseudo-label engine.
# Every constant cites the section of docs/official_code.md ("spec") it comes from.
model = dict(
    type="WeCLIP",  # weclip/models/weclip.py (the model registry: weclip/models/registry.py)
    # Image normalisation fed to CLIP, inside the model (spec §1.2, §11 row 8): the authors use ImageNet
    # statistics on 0-255 RGB ("imagenet", faithful); "clip" uses CLIP's own constants (what CLIP was trained with).
    normalize="imagenet",
    norm_constants=dict(
        imagenet=dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),  # spec §1.2
        # CLIP's (0.48145466, 0.4578275, 0.40821073) / (0.26862954, 0.26130258, 0.27577711), x255
        clip=dict(mean=(122.7709383, 116.7460125, 104.09373615), std=(68.5005327, 66.6321579, 70.3231804)),
    ),
    backbone=dict(
        # open_clip architecture name, or a dict(embed_dim=..., vision_cfg=..., text_cfg=...) for custom
        # (tiny) models. OpenAI weights need QuickGELU (spec §1.1, environment.md).
        arch="ViT-B-16-quickgelu",
        # Where the weights come from (spec §1.1): a path to OpenAI's `ViT-B-16.pt` archive, an open_clip
        # checkpoint (.pt/.pth/.bin) or .safetensors file; "hub:<tag>" for an open_clip pretrained tag that is
        # already in the local cache (downloads only if the user sets allow_download); "random" for tests.
        weights="pretrained/ViT-B-16.pt",
        allow_download=False,
        # fp32 | bf16. The authors ran CLIP in mixed fp16/fp32 (spec §1.1); fp32 is the faithful reference
        # (differences ~1e-3 relative). bf16 autocasts the frozen CLIP on GPU only.
        precision="fp32",
    ),
    text=dict(
        # Single prompt template (spec §2). The prompted names are data.prompt_class_names / prompt_bg_names.
        template="a clean origami {}.",
    ),
    decoder=dict(
        embed_dim=256,  # fusion MLP width and transformer width (spec §6.1, §6.2)
        num_layers=3,  # transformer decoder layers (spec §6.2)
        num_heads=8,  # 8 heads x 32 dims (spec §6.2)
        mlp_ratio=4,  # MLP 256 -> 1024 -> 256 with QuickGELU (spec §6.2)
        dropout=0.1,  # Dropout2d after the 1x1 fuse conv; its output is also F for A_f (spec §6.1, §4.1)
    ),
    cam=dict(
        # Grad-CAM target: softmax probability over [present fg; all bg] prompts (spec §1.6, §3).
        # Min-max normalisation: (x - min) / (max(x - min) + eps), applied twice by the authors' code
        # (per layer, then after the one-layer aggregation; fixture README) -> cam_norm_passes = 2.
        norm_eps=1e-7,  # spec §3 step 3
        cam_norm_passes=2,  # fixture README "cams_img0"; 1 = a single min-max (identical except tiny CAMs)
    ),
    refine=dict(
        static_layers=8,  # static (CLIP-ES) mode: mean of the last 8 attention maps (spec §4.2, §13.1)
        rfm_layers=6,  # RFM: last 6 maps for VOC (10 for COCO) (spec §4.2)
        # RFM layer filter (spec §4.3, §11 row 4): "signed" = the code's sum(A_f - A_l) (selection does not
        # depend on A_f); "abs" = the paper's description |A_f - A_l|.
        layer_filter="signed",
        filter_eps=1e-5,  # denominator of the mean of kept maps (spec §4.3)
        # First 1-indexed training iteration that uses the RFM (spec §4.2, §12.1). The authors' counter also
        # counts the 1,464 in-training validation forwards every 2,000 iterations, so "counter > 15000" first
        # holds at training iteration 9,145 (faithful default). 15001 = the code's stated threshold;
        # 1 = RFM from the start (paper). Validation/inference always use the RFM.
        rfm_start_iter=9145,
        sinkhorn_iters=3,  # column-then-row normalisation passes (spec §4.4)
        power=2,  # T <- T @ T after symmetrisation (spec §4.4)
        box_threshold=0.4,  # box mask threshold on the CAM, 0.4 VOC / 0.7 COCO (spec §4.5)
        # "official": the authors' contour boxes incl. their border clipping, which drops the last row/column
        # of a box touching the bottom/right border (spec §4.5, §12.13); "inclusive": keep that row/column.
        box_mode="official",
        norm_eps=1e-7,  # min-max of propagated CAMs before the resize (spec §4.6)
    ),
    pseudo_label=dict(
        bg_power=1,  # background score = (1 - max_k r_k) ** bg_power (spec §5 step 1, `cam_bg_thres`)
        # Label zero-padded crop pixels 255 (ignored by the losses). The authors' code labels them
        # (spec §5 step 5, §12.5): off for fidelity.
        ignore_padding=False,
    ),
    par=dict(
        num_iter=20,  # PAR iterations (spec §5.1)
        dilations=(1, 2, 4, 8, 12, 24),  # 8 neighbours per dilation -> 48 (spec §5.1)
        temperature=0.3,  # colour and position kernels divide by sigma then by 0.3 (spec §5.1)
        pos_weight=0.01,  # w = kappa + 0.01 * pi (spec §5.1)
        eps=1e-8,  # added to the standard deviations (spec §5.1)
    ),
)

loss = dict(
    seg_weight=1.0,  # L = 1 * L_seg + 0.1 * L_aff (spec §7.3)
    aff_weight=0.1,  # spec §7.3, §11 row 11
    aff_radius=8,  # Chebyshev radius of the affinity window on the 1/16 grid (spec §7.2)
    ignore_index=255,  # spec §7.1
)
