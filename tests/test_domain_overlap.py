"""experiments/study/domain_overlap.py: a data set's distance from the pretraining corpus, on
hand-checked molecules."""

import pytest


def test_overlap_counts_atoms_elements_and_nearest_neighbours(experiment_script):
    domain = experiment_script("study/domain_overlap")
    corpus = domain.describe(["CCO", "CCCCO", "c1ccccc1O"])  # 3, 5 and 7 heavy atoms; C, O.
    data = domain.describe(["CCO", "CP(C)C", "CCCCCCCCO", "not a smiles"])
    report = domain.overlap(data, corpus)
    assert report["molecules"] == 3 and report["unparsed"] == 1
    assert report["heavy_atoms_p10_median_p90"][1] == 4.0  # Of 3, 4 and 9 heavy atoms.
    assert report["in_corpus_atom_range"] == pytest.approx(2 / 3)  # 9 atoms is above 7.
    assert report["with_element_not_in_corpus"] == pytest.approx(1 / 3)  # Phosphorus.
    # Nearest corpus neighbours: ethanol itself (1.0), octanol's is butanol (10 / 14 Morgan
    # bits), trimethylphosphine shares only the methyl bit with ethanol (1 / 9).
    assert report["nearest_corpus_similarity_median"] == pytest.approx(10 / 14)
    assert report["nearest_corpus_similarity_ge_0.4"] == pytest.approx(2 / 3)
