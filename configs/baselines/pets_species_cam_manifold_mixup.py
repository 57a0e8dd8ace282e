# Oxford-IIIT Pet (species), stage 1 with Manifold Mixup (input / after layer1 / after layer2, alpha 2: the Manifold Mixup code).
#   python tools/train.py configs/baselines/pets_species_cam_manifold_mixup.py
#   python tools/sweep_cams.py configs/baselines/pets_species_cam_manifold_mixup.py work_dirs/pets_species_cam_manifold_mixup/checkpoints/iter_*.pth --split train
_base_ = ["./pets_species_cam.py"]
model = dict(method=dict(type="manifold_mixup"))
