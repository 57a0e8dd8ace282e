# Pixel-to-prototype contrast (Du et al., CVPR 2022) on the toy world: SEAM's step on a fixed-size second view
# plus the cross-view and intra-view InfoNCE terms (weights 0.1); the CAMs evaluated are the PCM-revised ones.
#   python tools/train.py configs/baselines/toy_cam_p2p.py --device cpu
#   python tools/sweep_cams.py configs/baselines/toy_cam_p2p.py work_dirs/toy_cam_p2p/checkpoints/iter_*.pth
_base_ = ["./toy_cam.py"]
model = dict(
    method=dict(
        type="p2p",
        # P2P resizes its 448 crops to 128 x 128 (0.29 of the side); the toy world's second view is 56 x 56 (a 7x7
        # grid at stride 8), as toy_cam_seam.py's 0.5. 4 classes + background = 5 prototypes: the default mining
        # (skip 3, keep 10) keeps the positive and one negative.
        p2p=dict(view_size=(56, 56)),
    )
)
