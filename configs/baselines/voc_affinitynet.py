# AffinityNet on VOC, from the stage-1 classifier's CAMs (psa: 8 epochs, batch 8, 448 crops).
#   python tools/train.py configs/baselines/voc_affinitynet.py \
#       --cfg-options model.cam_checkpoint=work_dirs/voc_cam/checkpoints/iter_3310.pth
#   python tools/eval_pseudo.py configs/baselines/voc_affinitynet.py CKPT --split train_aug --rows rw \
#       --cfg-options model.cam_checkpoint=... --export-dir data/VOCdevkit/VOC2012/pseudo_masks
_base_ = ["./_base_/affinitynet_resnet50.py", "../_base_/datasets/voc12.py"]
model = dict(cam_checkpoint="work_dirs/voc_cam/checkpoints/iter_3310.pth")
data = dict(crop_size=448, scale_range=(0.7, 1.3))
train = dict(max_iters=10582, ckpt_interval=2646)
