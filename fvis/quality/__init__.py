"""Explanation quality: one pinned definition per measure.

* selectivity (:mod:`.selectivity`): :func:`pixel_flipping` (one-shot ranking, every
  step in one batch) and :func:`recompute_flipping` (Montavon et al.'s loop), orders
  MoRF / LeRF / random, baseline fill or ROAD imputation;
* robustness (:mod:`.robustness`): :func:`continuity`, :func:`infidelity`,
  :func:`max_sensitivity`;
* the sanity check (:mod:`.randomization`): :func:`model_randomization`;
* feature visualizations (:mod:`.visualization`): :func:`transformation_robustness`,
  :func:`diversity`, :func:`transfer`.

The report that runs them on several methods is :mod:`fvis.evaluate`.
"""

from fvis.quality.randomization import Randomization, model_randomization, spearman
from fvis.quality.robustness import continuity, infidelity, max_sensitivity
from fvis.quality.selectivity import (
    ORDERS,
    FlipCurve,
    pixel_flipping,
    recompute_flipping,
    road_impute,
)
from fvis.quality.visualization import diversity, transfer, transformation_robustness

__all__ = [
    "ORDERS",
    "FlipCurve",
    "Randomization",
    "continuity",
    "diversity",
    "infidelity",
    "max_sensitivity",
    "model_randomization",
    "pixel_flipping",
    "recompute_flipping",
    "road_impute",
    "spearman",
    "transfer",
    "transformation_robustness",
]
