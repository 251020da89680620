"""Node fault rates: counting failures in history, the gamma-Poisson prior, the memory-pressure factor."""

import numpy as np
import pytest

from guardgrid.faults import (counter_increase, fault_rates, notready_episodes, observed_hours, posterior_rate,
                              pressure_factor)

nan = np.nan


def test_each_fall_from_ready_to_not_ready_is_one_episode():
    ready = np.array([[1, 1, 0, 0, 1, 0, 1, 1],
                      [1, 1, 1, 1, 1, 1, 1, 1],
                      [0, 0, 0, 1, 1, 1, 1, 1]], dtype=float)  # starting NotReady is not a fall
    assert notready_episodes(ready).tolist() == [2.0, 0.0, 0.0]


def test_a_scrape_gap_is_not_an_episode_and_does_not_hide_one():
    ready = np.array([[1, nan, nan, 1, 1],  # gap while ready: nothing happened
                      [1, nan, 0, 0, 1],  # fell during the gap: counted once
                      [nan, nan, nan, nan, nan]])
    assert notready_episodes(ready).tolist() == [0.0, 1.0, 0.0]


def test_counter_increase_handles_resets_and_gaps_like_prometheus():
    counter = np.array([[5, 5, 6, 8, 8],  # +3
                        [7, 9, 1, 2, nan],  # +2, reset to 1 (+1), +1: 4
                        [nan, nan, 4, 4, 5],  # the first sample is the baseline, not an increase: +1
                        [nan, nan, nan, nan, nan]])
    assert counter_increase(counter).tolist() == [3.0, 4.0, 1.0, 0.0]


def test_observed_hours_count_valid_samples():
    series = np.array([[1.0] * 120, [nan] * 60 + [1.0] * 60])
    assert observed_hours(series, 60.0).tolist() == [2.0, 1.0]


def test_a_new_node_gets_the_prior_rate_not_a_perfect_record():
    rate = posterior_rate(failures=[0.0], hours=[0.0], prior_rate=0.01, prior_hours=24.0)
    assert rate[0] == pytest.approx(0.01)


def test_evidence_moves_the_rate_away_from_the_prior_in_proportion_to_its_weight():
    clean_long, clean_short, flaky = posterior_rate([0.0, 0.0, 6.0], [240.0, 2.0, 24.0], 0.01, 24.0)
    assert clean_long < clean_short < 0.01  # a long clean history earns a lower rate than a short one
    assert flaky == pytest.approx((6 + 0.24) / 48)  # (failures + prior * hours) / (observed + prior hours)


def test_memory_pressure_leaves_a_comfortable_node_alone_and_triples_a_full_one():
    assert pressure_factor([0.5, 0.8, 0.9, 1.0]).tolist() == pytest.approx([1.0, 1.0, 2.0, 3.0])
    base = posterior_rate([1.0], [24.0], 0.01, 24.0)[0]
    assert fault_rates([1.0, 1.0], [24.0, 24.0], [0.3, 1.0], 0.01, 24.0).tolist() == \
        pytest.approx([base, 3 * base])


def test_missing_figures_are_treated_as_no_evidence_and_a_bad_prior_is_refused():
    assert posterior_rate([nan], [nan], 0.02, 10.0)[0] == pytest.approx(0.02)
    assert pressure_factor([nan])[0] == 1.0
    with pytest.raises(ValueError):
        posterior_rate([0.0], [1.0], 0.01, 0.0)
