"""Published numbers to compare fine-tuning results against (SPEC 8).

MoleculeNet classification test ROC-AUC (%) on the scaffold split, MoleBLEND (PyTorch) as
reported; SPEC 8 marks the per-data-set values unverified and the average corroborated by a
third-party source. SPEC gives no MoleBLEND numbers for ESOL / FreeSolv / Lipophilicity / QM9.
Beside them, MUBen's 3-seed re-runs of Uni-Mol and GROVER (`MUBEN_UNIMOL`, `MUBEN_GROVER`):
reference runs by a third party, labelled as such wherever they are shown.
"""

# SPEC 8, row "MoleBLEND".
MOLEBLEND_ROC_AUC = {
    "bbbp": 73.0,
    "tox21": 77.8,
    "toxcast": 66.1,
    "sider": 64.9,
    "clintox": 87.6,
    "muv": 77.2,
    "hiv": 79.0,
    "bace": 83.7,
}
MOLEBLEND_ROC_AUC_AVERAGE = 76.2

# SPEC 8, other rows, for context.
UNIMOL_ROC_AUC = {
    "bbbp": 72.9,
    "tox21": 79.6,
    "toxcast": 69.6,
    "sider": 65.9,
    "clintox": 91.9,
    "muv": 82.1,
    "hiv": 80.8,
    "bace": 85.7,
}
GEM_ROC_AUC = {
    "bbbp": 72.4,
    "tox21": 78.1,
    "toxcast": 69.2,
    "sider": 67.2,
    "clintox": 90.1,
    "muv": 81.7,
    "hiv": 80.6,
    "bace": 85.6,
}

# Molecule counts as commonly reported (Uni-Mol / GEM tables), used only to flag a data set of a
# clearly different size; the raw DeepChem CSVs hold a few more rows that RDKit cannot parse
# (e.g. BBBP.csv has 2050 rows).
MOLECULENET_SIZES = {
    "bbbp": 2039,
    "tox21": 7831,
    "toxcast": 8575,
    "sider": 1427,
    "clintox": 1478,
    "muv": 93087,
    "hiv": 41127,
    "bace": 1513,
    "esol": 1128,
    "freesolv": 642,
    "lipophilicity": 4200,
}

# SPEC 6: the original pretraining budget.
ORIGINAL_PRETRAIN_MOLECULES = 3_378_606  # PCQM4Mv2 train split.
ORIGINAL_PRETRAIN_STEPS = 200_000
ORIGINAL_PRETRAIN_BATCH = 4096

# SPEC 7: the original tuned hyperparameters with 30 Bayesian trials per data set.
ORIGINAL_TUNING_TRIALS = 30

# Reference re-runs, not the papers' numbers: MUBen (Li et al., "MUBen: Benchmarking the
# Uncertainty of Molecular Representation Models", TMLR 2024) fine-tuned Uni-Mol and GROVER with
# 3 seeds on Uni-Mol's own scaffold split (its molecular_property_prediction files) and no
# uncertainty method (the "<model>-none" row). Mean and std over the seeds, from the repository
# github.com/Yinghao-Li/MUBen at commit f0ec55667c1c4cc7b63369018fd011a96f31fdc4,
# reports/primary/<model>-<set>.csv (columns roc-auc-mean / roc-auc-std, rmse-mean / rmse-std);
# "lipophilicity" is its lipo. Classification: test ROC-AUC %; regression: test RMSE.
MUBEN_SOURCE = "github.com/Yinghao-Li/MUBen reports/primary (3 seeds, Uni-Mol's scaffold split)"
MUBEN_UNIMOL = {
    "bbbp": (71.0, 0.8),
    "bace": (80.8, 2.7),
    "clintox": (88.1, 3.8),
    "tox21": (78.9, 0.2),
    "toxcast": (67.3, 1.0),
    "sider": (62.1, 0.7),
    "hiv": (79.1, 0.4),
    "muv": (77.2, 2.0),
    "esol": (0.853, 0.022),
    "freesolv": (1.787, 0.126),
    "lipophilicity": (0.608, 0.003),
}
MUBEN_GROVER = {
    "bbbp": (70.7, 0.6),
    "bace": (83.1, 0.1),
    "clintox": (94.0, 1.5),
    "tox21": (78.1, 0.2),
    "toxcast": (65.9, 0.2),
    "sider": (62.1, 0.3),
    "hiv": (79.8, 0.4),
    "muv": (71.6, 3.3),
    "esol": (0.936, 0.025),
    "freesolv": (2.135, 0.019),
    "lipophilicity": (0.632, 0.007),
}
