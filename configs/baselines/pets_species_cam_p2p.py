# Oxford-IIIT Pet (species), stage 1 with Pixel-to-prototype contrast (SEAM + a 128 x 128 second view + cross / intra-view InfoNCE, weights 0.1).
#   python tools/train.py configs/baselines/pets_species_cam_p2p.py
#   python tools/sweep_cams.py configs/baselines/pets_species_cam_p2p.py work_dirs/pets_species_cam_p2p/checkpoints/iter_*.pth --split train
_base_ = ["./pets_species_cam.py"]
# 2 classes + background = 3 prototypes: semi-hard mining (skip 3) would leave only the positive (docs/cam_methods.md)
model = dict(method=dict(type="p2p", p2p=dict(semi_hard=False)))
