# WeCLIP on Oxford-IIIT Pet (species): prompts from the class names (weclip.data.pets.prompt_names), the paper's
# model and schedule scaled to the ~3,300 training images (about 12 epochs at batch 4, as VOC's 30,000 iterations).
#   python tools/train.py configs/baselines/pets_species_weclip.py
_base_ = [
    "../_base_/models/weclip_vitb16.py",
    "../_base_/schedules/adamw_poly.py",
    "../_base_/default_runtime.py",
    "./_base_/pets_species.py",
]
# ~30% of the schedule, as VOC's 9,145 of 30,000 (spec §4.2)
model = dict(refine=dict(rfm_start_iter=3000))
train = dict(
    max_iters=10000, ckpt_interval=2000, eval_interval=2000, eval_split="val", eval_max_images=500
)
