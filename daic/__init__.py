"""daic: the DNN Assessment and Improvement Cycle (Guerriero, Pietrantuono, Russo, ICSE-NIER 2023).

Online, pseudo-oracles estimate a deployed model's operational accuracy without labels; when that
estimate drops, operational inputs are sampled for human labeling, which gives an unbiased estimate
with few labels and the data to retrain on.
"""

__version__ = "0.1.0"
