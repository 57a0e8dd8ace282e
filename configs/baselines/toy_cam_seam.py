# SEAM (Wang et al., CVPR 2020) on the toy world: a rescaled second view, the pixel correlation module on
# layer2 / layer3, classification + ER + ECR + rvmin losses; the CAMs evaluated are the PCM-revised ones.
#   python tools/train.py configs/baselines/toy_cam_seam.py --device cpu
#   python tools/sweep_cams.py configs/baselines/toy_cam_seam.py work_dirs/toy_cam_seam/checkpoints/iter_*.pth
_base_ = ["./toy_cam.py"]
model = dict(
    method=dict(
        type="seam",
        # SEAM rescales its 448 crops by 0.3 (a 17x17 grid at stride 8); 0.3 of a 112 px toy image would leave a
        # 5x5 grid, so the toy world uses 0.5 (7x7). PCM widths 64 / 128 -> 192 as SEAM (its trunk is wider).
        seam=dict(scale=0.5),
    )
)
