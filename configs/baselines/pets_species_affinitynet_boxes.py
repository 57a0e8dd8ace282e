# Box-supervised AffinityNet on Oxford-IIIT Pet (species): affinity labels from Gaussian seeds in the head boxes
# (boxes.json of tools/prepare_pets.py) instead of the CAMs; the random walk still propagates the classifier's CAMs.
# Seeds (once): weclip.baselines.box_seeds.write_box_seed_masks -> data/pets_species/box_seeds (docs/baselines.md).
# Head boxes only cover the head: the rest of the pet is seeded as background (a known limit of this recipe).
_base_ = ["./pets_species_affinitynet.py"]
model = dict(seeds="boxes")
data = dict(train_mask_dir="box_seeds")
