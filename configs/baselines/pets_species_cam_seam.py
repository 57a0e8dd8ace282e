# Oxford-IIIT Pet (species), stage 1 with SEAM (0.3 rescaled second view, PCM on layer2 / layer3 (ResNet-50: 512 / 1024 channels, as ResNet-38's conv4 / conv5), ER + ECR + rvmin).
#   python tools/train.py configs/baselines/pets_species_cam_seam.py
#   python tools/sweep_cams.py configs/baselines/pets_species_cam_seam.py work_dirs/pets_species_cam_seam/checkpoints/iter_*.pth --split train
_base_ = ["./pets_species_cam.py"]
model = dict(method=dict(type="seam"))
