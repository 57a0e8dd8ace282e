# WeCLIP+ on VOC with CLIP ViT-B/16 + DINOv2 ViT-B/14 (the `dinov2_vitb14` block of the authors'
# configs/voc_attn_reg.yaml, doc §2.1): everything else as voc_dinov2_s.py.
#   python tools/train.py configs/weclip_plus/voc_dinov2_b.py
_base_ = ["./voc_dinov2_s.py"]
model = dict(
    dino=dict(arch="dinov2_vitb14", weights="pretrained/dinov2_vitb14_pretrain.pth"),  # width 768
    decoder=dict(num_layers=3),  # `decoder_layer: 3` for S and B (doc §3.2)
)
