# AffinityNet on Oxford-IIIT Pet (breeds), from the stage-1 classifier's CAMs.
#   python tools/train.py configs/baselines/pets_breeds_affinitynet.py \
#       --cfg-options model.cam_checkpoint=work_dirs/pets_breeds_cam/checkpoints/iter_1030.pth
#   python tools/eval_pseudo.py configs/baselines/pets_breeds_affinitynet.py CKPT --split train --rows rw \
#       --cfg-options model.cam_checkpoint=... --export-dir data/pets_breeds/pseudo_masks
_base_ = ["./_base_/affinitynet_resnet50.py", "./_base_/pets_breeds.py"]
model = dict(cam_checkpoint="work_dirs/pets_breeds_cam/checkpoints/iter_1030.pth")
data = dict(crop_size=448, scale_range=(0.7, 1.3))
train = dict(max_iters=3300, ckpt_interval=1100)  # 8 epochs at batch 8 (psa)
