"""The sequential plan's decisions: boundaries, repeated p-values, tracks, the family."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator import sequential
from orchestrator.sequential import Design, State, Track


def test_one_look_is_the_fixed_test() -> None:
    assert sequential.critical(10, 10, 10, 2.0, 0.05) == pytest.approx(
        sps.norm.isf(0.025), abs=2e-3
    )
    assert sequential.critical(10, 10, 10, 2.0, 0.01) == pytest.approx(
        sps.norm.isf(0.005), abs=2e-3
    )


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.0033])
def test_the_boundaries_spend_alpha_over_every_look(alpha: float) -> None:
    """Brownian paths looked at after every round cross as often as alpha says."""
    rng = np.random.default_rng(7)
    paths = np.cumsum(rng.normal(size=(100_000, 30)), axis=1)[:, 4:]
    n = np.arange(5, 31)
    c = np.array([sequential.critical(int(k), 5, 30, 2.0, alpha) for k in n])
    crossed = np.mean((np.abs(paths) / np.sqrt(n) >= c).any(axis=1))
    assert crossed == pytest.approx(alpha, rel=0.12)


def test_early_looks_ask_for_more_than_late_ones() -> None:
    first, last = (sequential.critical(k, 5, 40, 2.0, 0.05) for k in (5, 40))
    assert first > 3.0 > last > sps.norm.isf(0.025)


def test_the_repeated_p_value_inverts_the_boundary() -> None:
    c = sequential.critical(20, 5, 40, 2.0, 0.01)
    column = sequential.boundaries(5, 40, 2.0)[:, 20 - 5]  # look 20
    p = sequential._p_from(column, np.array([c, 0.0, 50.0]))
    assert p[0] == pytest.approx(0.01, rel=0.02)
    assert p[1] == 1.0
    assert p[2] < 1e-6


def test_a_large_change_is_decided_in_the_first_looks() -> None:
    rng = np.random.default_rng(1)
    d = list(np.log(0.7) + rng.normal(0, 0.05, 40))
    t = sequential.track(d, 40, family=15, design=Design())
    assert t.state is State.CHANGED and t.n <= 7
    assert t.ratio == pytest.approx(0.7, rel=0.05)


def test_no_change_with_little_noise_is_the_same_within_the_bound() -> None:
    rng = np.random.default_rng(2)
    t = sequential.track(list(rng.normal(0, 0.02, 40)), 40, family=15, design=Design())
    assert t.state is State.SAME
    assert 0.95 < t.low < 1.0 < t.high < 1.05
    assert t.bound < 0.05


def test_noise_too_large_for_the_bound_stops_at_the_most_boots() -> None:
    rng = np.random.default_rng(3)
    t = sequential.track(list(rng.normal(0, 0.3, 60)), 20, family=15, design=Design())
    assert (t.state, t.n, t.n_max) == (State.MAXED, 20, 20)
    assert t.bound > 0.05


def test_fewer_rounds_than_the_first_look_stay_open() -> None:
    t = sequential.track([0.1, 0.2, 0.1], 40, family=1, design=Design())
    assert t.state is State.OPEN and math.isnan(t.low)
    assert sequential.distance(t, Design()) == math.inf


def test_rounds_after_the_deciding_look_do_not_count() -> None:
    rng = np.random.default_rng(4)
    d = list(np.log(0.7) + rng.normal(0, 0.05, 10))
    decided = sequential.track(d, 40, 15, Design())
    assert decided.state is State.CHANGED
    assert sequential.track([*d, 5.0, 5.0, 5.0], 40, 15, Design()) == decided


def _track(p: float, state: State = State.MAXED) -> Track:
    return Track(20, 20, 1.0, 0.9, 1.1, p, state)


def test_the_family_is_decided_by_holm_or_benjamini_hochberg() -> None:
    found = {
        ("a", "t", "m"): _track(0.001),
        ("b", "t", "m"): _track(0.02),
        ("c", "t", "m"): _track(0.04),
        ("d", "t", "m"): _track(0.9),
    }
    # BH at 5 % over 4: 0.001 <= 0.0125, 0.02 <= 0.025, 0.04 > 0.0375 and 0.9.
    fdr = Design(control=sequential.Control.FDR)
    assert sequential.discoveries(found, fdr) == {("a", "t", "m"), ("b", "t", "m")}
    # Holm at 5 %: 0.001 <= 0.05/4, then 0.02 > 0.05/3 stops it.
    assert sequential.discoveries(found, Design()) == {("a", "t", "m")}


def test_open_tests_are_what_the_next_round_measures() -> None:
    found = {
        ("a", "t1", "m"): _track(0.5, State.OPEN),
        ("a", "t2", "m"): _track(0.5, State.SAME),
        ("b", "t1", "m"): _track(0.001, State.CHANGED),
    }
    assert sequential.open_tests(found) == {"a": frozenset({"t1"})}


def test_calibrated_p_values_hold_their_level_over_every_look() -> None:
    """Gaussian rounds of unknown spread (other draws than the calibration's):
    a comparison looked at after every round is called changed as often as
    its level says, at the run's level and at a family member's."""
    rng = np.random.default_rng(99)
    x = rng.normal(0.0, 0.07, (40_000, 40))
    for level in (0.05, 0.05 / 12):
        found = sequential.tracks_of(x, 40, 1, Design(q=level, equivalence=1e-4))
        rate = np.mean([t.p <= level for t in found])
        assert rate == pytest.approx(level, rel=0.15)
