# WeCLIP on the same toy world, for the baselines' table (tools/baseline_pipeline.py): configs/toy.py unchanged
# except that validation is left to tools/eval_pseudo.py and tools/infer.py.
_base_ = ["../toy.py"]

train = dict(eval_interval=0)
