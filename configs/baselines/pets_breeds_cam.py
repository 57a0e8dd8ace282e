# Stage 1 on Oxford-IIIT Pet (breeds): ResNet-50 CAM classifier, softmax CE (one pet per image).
#   python tools/train.py configs/baselines/pets_breeds_cam.py
#   python tools/sweep_cams.py configs/baselines/pets_breeds_cam.py work_dirs/pets_breeds_cam/checkpoints/iter_*.pth
_base_ = ["./_base_/cam_resnet50.py", "./_base_/pets_breeds.py"]
data = dict(crop_size=448, scale_range=(0.5, 1.5))  # Pet photos are 200-500 px
loss = dict(kind="single")
# 5 epochs of the ~3,300 train images at batch 16; one per epoch
train = dict(max_iters=1030, ckpt_interval=206)
