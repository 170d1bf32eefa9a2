"""The combination rules against closed forms on hand-made tensors."""

import math

import pytest
import torch

from mavis_core.tilts import (
    mavis_contributions,
    mavis_tilt,
    mod_mix,
    rsoup_delta,
    sample_index,
    top_k_logits,
    value_bonus,
)

LOGITS = torch.tensor([[2.0, 1.0, 0.5]])  # (B=1, k=3)
VALUES = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]]])  # (B=1, M=2, k=3)


def test_mavis_tilt_closed_form():
    lam = torch.tensor([0.25, 0.75])
    got = mavis_tilt(LOGITS, VALUES, lam, beta=2.0)
    expected = [2.0 + 2 * (0.25 * 0 + 0.75 * 3), 1.0 + 2 * (0.25 * 1 + 0), 0.5 + 2 * (0.25 * 2 + 0.75 * -1)]
    torch.testing.assert_close(got, torch.tensor([expected]))


def test_beta_zero_is_the_base_distribution_over_top_k():
    full = torch.tensor([[3.0, -1.0, 2.0, 0.0, 1.5]])
    cand, idx = top_k_logits(full, 3, temperature=1.0)
    tilted = mavis_tilt(cand, torch.randn(1, 2, 3), torch.tensor([0.5, 0.5]), beta=0.0)
    base = torch.softmax(full, -1)[0, idx[0]]
    torch.testing.assert_close(torch.softmax(tilted, -1)[0], base / base.sum())


def test_one_hot_weights_use_one_objective_only():
    one_hot = mavis_tilt(LOGITS, VALUES, torch.tensor([0.0, 1.0]), beta=1.5)
    torch.testing.assert_close(one_hot, LOGITS + 1.5 * VALUES[:, 1])


def test_tilts_do_not_modify_inputs():
    logits, values, lam = LOGITS.clone(), VALUES.clone(), torch.tensor([0.3, 0.7])
    mavis_tilt(logits, values, lam, 1.0)
    mavis_contributions(values, lam, 1.0)
    mod_mix(values.transpose(0, 1), lam)  # (M, B, k): one row of logits per policy
    top_k_logits(logits, 2, 0.5)
    assert torch.equal(logits, LOGITS) and torch.equal(values, VALUES)
    assert torch.equal(lam, torch.tensor([0.3, 0.7]))


def test_contributions_are_centred_weighted_values():
    got = mavis_contributions(VALUES, torch.tensor([0.5, 0.5]), beta=2.0)
    torch.testing.assert_close(got[0, 0], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(got[0, 1], 2.0 * 0.5 * (VALUES[0, 1] - VALUES[0, 1].mean()))
    assert torch.allclose(got.sum(-1), torch.zeros(1, 2), atol=1e-6)


def test_mod_mix_equals_weighted_log_probs():
    policy_logits = torch.tensor([[[1.0, 0.0, -1.0]], [[0.0, 2.0, 0.0]]])  # (M=2, B=1, V=3)
    got = mod_mix(policy_logits, torch.tensor([0.4, 0.6]))
    by_hand = [
        0.4 * (a - math.log(sum(math.exp(x) for x in (1, 0, -1)))) + 0.6 * (b - math.log(2 + math.exp(2)))
        for a, b in zip((1.0, 0.0, -1.0), (0.0, 2.0, 0.0), strict=True)
    ]
    torch.testing.assert_close(got, torch.tensor([by_hand]))


def test_rsoup_delta_sums_products_not_factors():
    b1, a1, b2, a2 = torch.randn(4, 2), torch.randn(2, 3), torch.randn(4, 2), torch.randn(2, 3)
    got = rsoup_delta([b1 @ a1, b2 @ a2], [0.3, 0.7])
    torch.testing.assert_close(got, 0.3 * b1 @ a1 + 0.7 * b2 @ a2)


def test_top_k_applies_temperature_and_clips_k():
    vals, idx = top_k_logits(torch.tensor([[1.0, 3.0, 2.0]]), 10, temperature=0.5)
    assert idx.tolist() == [[1, 2, 0]]
    torch.testing.assert_close(vals, torch.tensor([[6.0, 4.0, 2.0]]))


def test_sample_index_is_seeded_per_row_and_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    draw = lambda seed: int(sample_index(logits, [torch.Generator().manual_seed(seed)]))
    assert [draw(s) for s in range(20)] == [draw(s) for s in range(20)]
    counts = torch.bincount(torch.tensor([draw(s) for s in range(2000)]), minlength=3) / 2000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.04, rtol=0)
    # Row 1 of a batch draws what it would draw alone with its own generator.
    both = sample_index(logits.repeat(2, 1), [torch.Generator().manual_seed(3), torch.Generator().manual_seed(5)])
    assert both.tolist() == [draw(3), draw(5)]


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_tilt_keeps_shape_for_batches(beta):
    out = mavis_tilt(torch.randn(4, 5), torch.randn(4, 3, 5), torch.tensor([0.2, 0.3, 0.5]), beta)
    assert out.shape == (4, 5)


def test_value_bonus_is_the_tilt_alone():
    values = torch.tensor([[[1.0, -2.0, 0.5]], [[0.0, 3.0, 1.0]]]).transpose(0, 1)  # (1, M=2, k=3)
    lam = torch.tensor([0.25, 0.75])
    logits = torch.tensor([[0.1, 0.2, 0.3]])
    bonus = value_bonus(values, lam, 2.0)
    torch.testing.assert_close(bonus, 2.0 * (0.25 * values[:, 0] + 0.75 * values[:, 1]))
    torch.testing.assert_close(mavis_tilt(logits, values, lam, 2.0), logits + bonus)


def test_mod_mix_at_a_strength_moves_from_the_base_and_checks_shapes():
    policy_logits, ref = torch.tensor([[[1.0, 0.0, -1.0]], [[0.0, 2.0, 0.0]]]), torch.tensor([[0.5, 0.5, 3.0]])
    lam = torch.tensor([0.4, 0.6])
    full = mod_mix(policy_logits, lam)
    half = mod_mix(policy_logits, lam, ref, strength=0.5)
    torch.testing.assert_close(half, 0.5 * torch.log_softmax(ref, -1) + 0.5 * full)
    torch.testing.assert_close(mod_mix(policy_logits, lam, ref, strength=0.0), torch.log_softmax(ref, -1))
    with pytest.raises(ValueError, match="one weight per policy"):
        mod_mix(policy_logits, torch.tensor([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="needs the base's logits"):
        mod_mix(policy_logits, lam, strength=0.5)
