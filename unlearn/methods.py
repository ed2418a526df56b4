"""Registry of unlearning methods: key = file name = configs/method/<key>.yaml.

To add a method: write unlearn/<name>.py with `def <name>(model, data, *, <hyperparameters>, generator)`,
add one line here, add configs/method/<name>.yaml (`name:` and `args:`) and configs/unlearned/<name>.yaml.
"""

from unlearn.safemax import safemax

METHODS = {
    "safemax": safemax,
}

# Not unlearning methods, but selectable wherever a method is: the base model itself and the
# model retrained from scratch without the forgotten class.
REFERENCES = ("original", "oracle")
