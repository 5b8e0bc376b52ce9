"""Baselines trained and scored by the same harness as HAF-VT (``hafvt.train.run``).

Each is written from its paper (module docstrings name the paper, equations and what differs):
``transitions`` (non-neural floor), ``gru4rec``, ``sasrec``, ``srgnn``, ``c2dsr``, and the cross-domain
baselines the papers only quote: ``tricdr``, ``mifn`` and ``psjnet``.
``hafvt.models.build_model`` looks a model up here as ``MODELS[cfg.model](cfg, scenario)``.
"""
from hafvt.models.baselines.c2dsr import C2DSR
from hafvt.models.baselines.gru4rec import GRU4Rec
from hafvt.models.baselines.mifn import MIFN
from hafvt.models.baselines.psjnet import PSJNet
from hafvt.models.baselines.sasrec import SASRec
from hafvt.models.baselines.srgnn import SRGNN
from hafvt.models.baselines.transitions import Transitions
from hafvt.models.baselines.tricdr import TriCDR

MODELS = {"transitions": Transitions, "gru4rec": GRU4Rec, "sasrec": SASRec, "srgnn": SRGNN, "c2dsr": C2DSR,
          "tricdr": TriCDR, "mifn": MIFN, "psjnet": PSJNet}
