"""The GUIM model (arXiv 2207.00750): item tower, user encoder with K interests, InfoNCE loss.

``GUIM(args)`` with ``args = model_args(cfg.train, bank.sizes())``; the interface is
``encode_items``, ``encode_users``, ``score``, ``loss`` (see guim.py).
"""
from .guim import GUIM, check_args, model_args
from .towers import BANK_KEYS, ItemTower

__all__ = ["GUIM", "ItemTower", "BANK_KEYS", "model_args", "check_args"]
