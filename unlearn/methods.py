"""Registry of unlearning methods: key = file name = configs/method/<key>.yaml `name`.

To add a method: write unlearn/<name>.py with `def <name>(model, data, *, <hyperparameters>, generator)`,
add one line here, add configs/method/<name>.yaml (`label`, `name`, `args`) and configs/unlearned/<name>.yaml.
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
}

# Not unlearning methods, but selectable wherever a method is: the base model itself and the
# model retrained from scratch without the forgotten class.
REFERENCES = ("original", "oracle")
