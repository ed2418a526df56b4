"""The attacks, by name: each module holds a pure generator of AttackStates, `plans(cfg, ctx)` and, where its records
need it, `TRAITS` (attacks/common.py).

To add an attack: write attacks/<name>.py (the generator, `plans`, and the two-line `__main__` shell the others
have), configs/attack/<name>.yaml (`name: <name>` and its settings, each commented), and one line here.
`python -m attacks.<name> unlearned=<method>` then works, with every option of configs/attack_job.yaml.
"""

from types import ModuleType

from attacks import deploy, embedding, finetune, mia, noise_opt, partial, relearn, sampler
from attacks.common import Traits

ATTACKS: dict[str, ModuleType] = {
    "relearn": relearn,
    "finetune": finetune,
    "embedding": embedding,
    "sampler": sampler,
    "mia": mia,
    "partial": partial,
    "noise_opt": noise_opt,
    "deploy": deploy,
}


def traits(name: str) -> Traits:
    """The declared traits of attack `name` (defaults for an attack this toolkit does not know: a budget curve)."""
    return getattr(ATTACKS.get(name), "TRAITS", Traits())
