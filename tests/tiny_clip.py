"""The tiny random CLIP shared by the tests (imported by conftest.py and the helper modules)."""

# A CLIP of the same family as ViT-B/16 (open_clip.CLIP, QuickGELU, ViT image tower), small enough for
# CPU tests: 32 px images, 8 px patches -> 4x4 grid, 3 blocks. pool_type="avg" makes open_clip's own
# encode_image pool like WeCLIP (mean of the patch tokens).
TINY_ARCH = dict(
    embed_dim=32,
    quick_gelu=True,
    vision_cfg=dict(
        image_size=32, patch_size=8, width=64, layers=3, head_width=32, pool_type="avg"
    ),
    text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
)
