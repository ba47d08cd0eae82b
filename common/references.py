"""The one table of published numbers. Every paper number shown anywhere comes from here.

Each entry names its source. These are *their* numbers, never ours: notebooks print them in a
column labelled "paper".
"""
from __future__ import annotations

import re
from typing import Any

SOURCES: dict[str, str] = {
    "kingma2014": "D. P. Kingma, D. J. Rezende, S. Mohamed, M. Welling. Semi-supervised learning "
                  "with deep generative models. NeurIPS 2014, arXiv:1406.5298, Table 1.",
    "dinh2016": "L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. "
                "ICLR 2017, arXiv:1605.08803, Table 1.",
    "grathwohl2018": "W. Grathwohl et al. FFJORD. ICLR 2019, arXiv:1810.01367, Table 2 "
                     "(Real NVP on MNIST, the figure later papers quote).",
    "dlt_da": "DeepLearning 0.1 tutorial, 'Denoising Autoencoders (dA)' (dA.py), "
              "LISA lab, after P. Vincent et al., ICML 2008.",
    "cb_study": "Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie. Class-balanced loss based on "
                "effective number of samples. CVPR 2019, arXiv:1901.05555 (the method). The "
                "numbers (CIFAR-10 with 3 minority classes, single runs) are from an unpublished "
                "study, a blog post whose numbers were given to us; the post itself was not "
                "located.",
    "menon2021": "A. K. Menon, S. Jayasumana, A. S. Rawat, H. Jain, A. Veit, S. Kumar. Long-tail "
                 "learning via logit adjustment. ICLR 2021, arXiv:2007.07314.",
    "ren2020": "J. Ren, C. Yu, S. Sheng, X. Ma, H. Zhao, S. Yi, H. Li. Balanced meta-softmax for "
               "long-tailed visual recognition. NeurIPS 2020, arXiv:2007.10740.",
    "cao2019": "K. Cao, C. Wei, A. Gaidon, N. Arechiga, T. Ma. Learning imbalanced datasets with "
               "label-distribution-aware margin loss. NeurIPS 2019, arXiv:1906.07413.",
    "jordan2024": "K. Jordan. 94% on CIFAR-10 in 3.29 seconds on a single GPU (airbench). 2024, "
                  "arXiv:2404.00498.",
    "goodfellow2014": "I. Goodfellow et al. Generative adversarial nets. NeurIPS 2014, "
                      "arXiv:1406.2661.",
    "radford2016": "A. Radford, L. Metz, S. Chintala. Unsupervised representation learning with "
                   "deep convolutional generative adversarial networks. ICLR 2016, arXiv:1511.06434.",
    "mirza2014": "M. Mirza, S. Osindero. Conditional generative adversarial nets. 2014, "
                 "arXiv:1411.1784.",
    "kingma_welling2014": "D. P. Kingma, M. Welling. Auto-encoding variational Bayes. ICLR 2014, "
                          "arXiv:1312.6114.",
    "heusel2017": "M. Heusel et al. GANs trained by a two time-scale update rule converge to a "
                  "local Nash equilibrium (FID). NeurIPS 2017, arXiv:1706.08500.",
    "cui2019": "Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie. Class-balanced loss based on "
               "effective number of samples. CVPR 2019, arXiv:1901.05555, Table 2 (long-tailed "
               "CIFAR-10, ResNet-32).",
    "he2016": "K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. "
              "CVPR 2016, arXiv:1512.03385 (the CIFAR ResNets, sec. 4.2).",
}

# Where each notebook's headline reference number (the README's "reference" column) comes from.
HEADLINE_SOURCE: dict[str, str] = {
    "01": "Kingma et al. 2014, Table 1, M1+TSVM",
    "02": "Kingma et al. 2014, Table 1",
    "03": "Kingma et al. 2014, Table 1",
    "05": "Grathwohl et al. 2018, Table 2",
    "06": "an unpublished study's single runs",
    "08": "Cui et al. 2019, Table 2",
}

# Kingma et al. 2014, Table 1: test error (%) on MNIST with N labels; (mean, std or None).
KINGMA_TABLE1: dict[int, dict[str, tuple[float, float | None] | None]] = {
    100: {"NN": (25.80, None), "CNN": (22.98, None), "TSVM": (16.81, None),
          "CAE": (13.47, None), "MTC": (12.03, None), "AtlasRBF": (8.10, 0.95),
          "M1+TSVM": (11.82, 0.25), "M2": (11.97, 1.71), "M1+M2": (3.33, 0.14)},
    600: {"NN": (11.44, None), "CNN": (7.68, None), "TSVM": (6.16, None),
          "CAE": (6.30, None), "MTC": (5.13, None), "AtlasRBF": None,
          "M1+TSVM": (5.72, 0.049), "M2": (4.94, 0.13), "M1+M2": (2.59, 0.05)},
    1000: {"NN": (10.70, None), "CNN": (6.45, None), "TSVM": (5.38, None),
           "CAE": (4.77, None), "MTC": (3.64, None), "AtlasRBF": (3.68, 0.12),
           "M1+TSVM": (4.24, 0.07), "M2": (3.60, 0.56), "M1+M2": (2.40, 0.02)},
    3000: {"NN": (6.04, None), "CNN": (3.35, None), "TSVM": (3.45, None),
           "CAE": (3.22, None), "MTC": (2.57, None), "AtlasRBF": None,
           "M1+TSVM": (3.49, 0.04), "M2": (3.92, 0.63), "M1+M2": (2.18, 0.04)},
}

# Real NVP test bits/dim.
REALNVP_BITS_PER_DIM: dict[str, tuple[float, str]] = {
    "cifar10": (3.49, "dinh2016"),
    "mnist": (1.06, "grathwohl2018"),
}

# Class-balanced loss study (an unpublished blog post, not located; see SOURCES['cb_study']):
# (majority, minority, all) test accuracy in %, single runs.
CB_STUDY: dict[str, tuple[float, float, float]] = {
    "balanced CE": (90.23, 94.4, 91.4),
    "CE": (87.93, 50.4, 76.5),
    "inverse frequency": (74.1, 74.67, 73.58),
    "focal γ=1": (88.47, 55.03, 78.33),
    "focal γ=1.5": (87.91, 53.56, 77.61),
    "focal γ=2": (86.37, 49.53, 75.32),
    "CB-softmax β=0.9": (88.66, 49.23, 76.83),
    "CB-softmax β=0.99": (89.45, 58.67, 80.22),
    "CB-softmax β=0.999": (86.76, 66.37, 80.64),
    "CB-softmax β=0.9999": (80.94, 75.23, 79.23),
    "CB-focal γ=1 β=0.9": (88.67, 53.70, 78.18),
    "CB-focal γ=1 β=0.99": (89.42, 60.63, 80.60),
    "CB-focal γ=1 β=0.999": (85.11, 64.70, 78.99),
    "CB-focal γ=1 β=0.9999": (72.40, 62.67, 69.48),
}

# Cui et al. 2019, Table 2: top-1 test error (%) of ResNet-32 on long-tailed CIFAR-10, per
# imbalance factor (n_max / n_min; 1 = the full balanced training set). Checked against a text
# copy of arXiv:1901.05555. "Focal" is the sigmoid-based focal loss of the paper (sec. 4.3), not
# the softmax form of common.losses. "Class-Balanced" is the best CB loss per column, its loss
# type, β and γ chosen per column (the paper: "best hyperparameters chosen via cross-validation";
# the table reports test error, see notebook 08), given in CUI_TABLE2_CB_CHOICE.
CUI_TABLE2_CIFAR10: dict[str, dict[int, float]] = {
    "Softmax": {200: 34.32, 100: 29.64, 50: 25.19, 20: 17.77, 10: 13.61, 1: 6.61},
    "Sigmoid": {200: 34.51, 100: 29.55, 50: 23.84, 20: 16.40, 10: 12.97, 1: 6.36},
    "Focal (γ=0.5)": {200: 36.00, 100: 29.77, 50: 23.28, 20: 17.11, 10: 13.19, 1: 6.75},
    "Focal (γ=1.0)": {200: 34.71, 100: 29.62, 50: 23.29, 20: 17.24, 10: 13.34, 1: 6.60},
    "Focal (γ=2.0)": {200: 35.12, 100: 30.41, 50: 23.48, 20: 16.77, 10: 13.68, 1: 6.61},
    "Class-Balanced": {200: 31.11, 100: 25.43, 50: 20.73, 20: 15.64, 10: 12.51},
}
# The CB loss behind each "Class-Balanced" entry: (loss type, β, γ); SM = softmax, SGM = sigmoid.
CUI_TABLE2_CB_CHOICE: dict[int, tuple[str, float, float | None]] = {
    200: ("SM", 0.9999, None), 100: ("Focal", 0.9999, 1.0), 50: ("Focal", 0.9999, 2.0),
    20: ("SM", 0.9999, None), 10: ("SGM", 0.9999, None),
}
# Later papers on the same long-tailed CIFAR-10 (imbalance 100 and 10), top-1 test error (%);
# each entry: ({factor: error}, source key, table, checked). Checked on 2026-12-05 against the
# papers' own text (arXiv v2 of each): Cao et al. Table 2 ("Top-1 validation errors of ResNet-32
# on imbalanced CIFAR-10", long-tailed columns; their validation set is CIFAR-10's test set);
# Menon et al. Table 3 of arXiv:2007.07314v2 ("Test set balanced error (averaged over 5
# trials)"; on CIFAR-10's balanced test set the balanced error is the top-1 error). The ICLR
# version's table number was not checked.
LT_CIFAR10_OTHERS: dict[str, tuple[dict[int, float], str, str, bool]] = {
    "LDAM-DRW": ({100: 22.97, 10: 11.84}, "cao2019", "Table 2", True),
    "CB Focal (as quoted by Cao et al.)": ({100: 25.43, 10: 12.90}, "cao2019", "Table 2", True),
    "logit-adjusted loss": ({100: 22.33}, "menon2021", "Table 3 (arXiv v2)", True),
}

# DeepLearning 0.1 dA tutorial: it publishes figures and run times, but no per-epoch costs or
# accuracies; notebook 04 says so and shows ours alone.
DLT_DA: dict[str, Any] = {"costs_published": False}


def cite(key: str) -> str:
    """Full citation for a source key, or a KeyError naming the known keys."""
    try:
        return SOURCES[key]
    except KeyError:
        raise KeyError(f"unknown source {key!r}; known: {sorted(SOURCES)}") from None


def short(key: str) -> str:
    """How a reader names a source in a legend or table: ``"grathwohl2018"`` -> "Grathwohl et
    al. 2018", ``"kingma_welling2014"`` -> "Kingma & Welling 2014" (the key must be in
    :data:`SOURCES`; one without a year, e.g. a tutorial, gives its full citation)."""
    cite(key)
    m = re.fullmatch(r"([a-z]+)(?:_([a-z]+))?(\d{4})", key)
    if m is None:
        return SOURCES[key]
    first, second, year = m.groups()
    if key in _TWO_AUTHORS:
        return f"{first.capitalize()} & {_TWO_AUTHORS[key]} {year}"
    if key in _ONE_AUTHOR:
        return f"{first.capitalize()} {year}"
    return f"{first.capitalize()} & {second.capitalize()} {year}" if second else f"{first.capitalize()} et al. {year}"


# keys whose name alone does not say how many authors the paper has (SOURCES gives them all)
_TWO_AUTHORS = {"mirza2014": "Osindero"}
_ONE_AUTHOR = {"jordan2024"}
