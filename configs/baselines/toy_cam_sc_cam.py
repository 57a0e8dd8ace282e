# SC-CAM (Chang et al., CVPR 2020) on the toy world, one round per run: the previous round's classifier
# clusters each class's image features (k-means), a second head learns parent x sub-category labels.
# Round 1 clusters with the plain classifier (configs/baselines/toy_cam.py); round r with round r - 1:
#   python tools/train.py configs/baselines/toy_cam.py --device cpu
#   python tools/train.py configs/baselines/toy_cam_sc_cam.py --device cpu                          # round 1
#   python tools/train.py configs/baselines/toy_cam_sc_cam.py --device cpu --work-dir work_dirs/toy_cam_sc_cam_r2 \
#       --cfg-options model.method.sc_cam.previous=work_dirs/toy_cam_sc_cam/checkpoints/iter_1500.pth   # round 2
#   python tools/sweep_cams.py configs/baselines/toy_cam_sc_cam.py work_dirs/toy_cam_sc_cam/checkpoints/iter_*.pth
# (SC-CAM ran 3 rounds; each round restarts from the initial weights, which the trainer does.)
_base_ = ["./toy_cam.py"]
model = dict(
    method=dict(
        type="sc_cam",
        # k = 10 as SC-CAM's VOC runs; the toy world's 4 shapes differ in colour and size
        sc_cam=dict(previous="work_dirs/toy_cam/checkpoints/iter_1500.pth", k=10),
    )
)
