# WeCLIP+ on VOC with CLIP ViT-B/16 + DINOv2 ViT-L/14 (the `dinov2_vitl14` block of the authors'
# configs/voc_attn_reg.yaml, doc §2.1): everything else as voc_dinov2_s.py.
#   python tools/train.py configs/weclip_plus/voc_dinov2_l.py
_base_ = ["./voc_dinov2_s.py"]
model = dict(
    dino=dict(arch="dinov2_vitl14", weights="pretrained/dinov2_vitl14_pretrain.pth"),  # width 1024
    decoder=dict(num_layers=5),  # `decoder_layer: 5` with DINOv2 L (doc §3.2)
)
