"""Registry of unlearning methods: key = configs/unlearned/<key>.yaml (its `name`) = the label records carry.

To add a method: write unlearn/<name>.py with `def <name>(model, data, *, <hyperparameters>, generator)`,
add one line here and configs/unlearned/<name>.yaml (`name`, `args`). A variant (other default args) is a config
that extends its method's (`defaults: [<method>, _self_]`) and one line here naming the same function.
"""

from unlearn.ga import ga
from unlearn.rl import rl
from unlearn.sa import sa
from unlearn.safemax import safemax
from unlearn.salun import salun

METHODS = {
    "safemax": safemax,
    "salun": salun,
    "sa": sa,
    "ga": ga,
    "rl": rl,
    "safemax_forget_only": safemax,  # the paper's objective: beta = 0 (configs/unlearned/safemax_forget_only.yaml)
    "salun_random_anchor": salun,    # ablation: random anchor, frozen target
}

# Not unlearning methods, but selectable wherever a method is: the base model itself and the
# model retrained from scratch without the forgotten class.
REFERENCES = ("original", "oracle")

# Exact unlearning, realised again: a model retrained from scratch without the forgotten class, as the oracle is,
# but from another pretraining seed (pretrain_seed + 1 + seed, so each study seed has its own). Attacked as an
# unlearned model against the oracle, its ER is the instrument's noise floor: what a model that never saw c_f
# shows above the oracle under the same attacks (REPORT Q4). It takes no args.
RETRAINED = ("retrain",)
