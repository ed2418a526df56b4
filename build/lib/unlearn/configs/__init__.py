"""Hydra configs, inside the package so that an installed copy finds them (`pkg://unlearn.configs`); the
checkout's top-level `configs` is a link to this folder."""
