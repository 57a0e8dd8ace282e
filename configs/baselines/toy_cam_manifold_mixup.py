# Manifold Mixup (Verma et al., ICML 2019) on the toy world: the hidden state before a random stage (input,
# after layer1, after layer2) is mixed; configs/baselines/toy_cam.py's classifier and schedule.
#   python tools/train.py configs/baselines/toy_cam_manifold_mixup.py --device cpu
#   python tools/sweep_cams.py configs/baselines/toy_cam_manifold_mixup.py work_dirs/toy_cam_manifold_mixup/checkpoints/iter_*.pth
_base_ = ["./toy_cam.py"]
# alpha 2, layers (0, 1, 2): Manifold Mixup's code; no Mixup-CAM regularisers (ent/con weights 0)
model = dict(method=dict(type="manifold_mixup"))
