"""Baselines trained and scored by the same harness as HAF-VT (``hafvt.train.run``).

Each is written from its paper (module docstrings name the paper, equations and what differs):
``transitions`` (non-neural floor), ``gru4rec``, ``sasrec``, ``srgnn``, ``c2dsr`` and ``mifn``.
``hafvt.models.build_model`` looks a model up here as ``MODELS[cfg.model](cfg, scenario)``.
"""
from hafvt.models.baselines.c2dsr import C2DSR
from hafvt.models.baselines.gru4rec import GRU4Rec
from hafvt.models.baselines.mifn import MIFN
from hafvt.models.baselines.sasrec import SASRec
from hafvt.models.baselines.srgnn import SRGNN
from hafvt.models.baselines.transitions import Transitions

MODELS = {"transitions": Transitions, "gru4rec": GRU4Rec, "sasrec": SASRec, "srgnn": SRGNN, "c2dsr": C2DSR,
          "mifn": MIFN}
