"""The OT loss DLFD maximises, against POT and the exact transport cost."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from dlfd.errors import ConfigError
from dlfd.ot import cosine_cost, entropic_ot_loss, sinkhorn_log_plan


def _features(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (
        torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        * scale
    )


def test_cosine_cost_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [-3.0, 0.0]])
    expected = torch.tensor(
        [[1 - 1 / np.sqrt(2), 2.0], [1 - 1 / np.sqrt(2), 1.0]], dtype=torch.float32
    )
    torch.testing.assert_close(cosine_cost(a, b), expected)
    assert (cosine_cost(a, a).diagonal() == 0).all()


@pytest.mark.parametrize("epsilon", [0.01, 0.1])
def test_plan_and_loss_match_pot_sinkhorn_log(epsilon: float) -> None:
    a, b = _features(7, 5, 0), _features(9, 5, 1)
    cost = cosine_cost(a, b)
    ours = sinkhorn_log_plan(cost, epsilon, max_iter=50)
    pot = ot.bregman.sinkhorn_log(
        torch.full((7,), 1 / 7, dtype=torch.float64),
        torch.full((9,), 1 / 9, dtype=torch.float64),
        cost,
        epsilon,
        numItermax=50,
        stopThr=0.0,
        warn=False,
    )
    torch.testing.assert_close(ours, pot, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(entropic_ot_loss(a, b, epsilon), (pot * cost).sum())


def test_converged_plan_has_uniform_marginals_and_approaches_exact_ot() -> None:
    a, b = _features(6, 4, 2), _features(6, 4, 3)
    cost = cosine_cost(a, b)
    plan = sinkhorn_log_plan(cost, epsilon=0.005, max_iter=5000)
    torch.testing.assert_close(plan.sum(1), torch.full((6,), 1 / 6, dtype=torch.float64))
    torch.testing.assert_close(
        plan.sum(0), torch.full((6,), 1 / 6, dtype=torch.float64), rtol=0, atol=1e-4
    )
    exact = ot.emd2(np.full(6, 1 / 6), np.full(6, 1 / 6), cost.numpy())
    value = float((plan * cost).sum())
    assert exact <= value + 1e-9 <= exact + 0.02


def test_stable_on_logits_at_small_epsilon_and_differentiable() -> None:
    logits_a = _features(32, 8, 4, scale=30.0).float().requires_grad_(True)
    logits_b = _features(32, 8, 5, scale=30.0).float()
    loss = entropic_ot_loss(logits_a, logits_b, epsilon=0.01, max_iter=50)
    assert torch.isfinite(loss) and loss > 0
    (grad,) = torch.autograd.grad(loss, logits_a)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradient_matches_finite_differences() -> None:
    a = _features(4, 3, 6).requires_grad_(True)
    b = _features(5, 3, 7)
    assert torch.autograd.gradcheck(lambda x: entropic_ot_loss(x, b, 0.05, 30), (a,))


def test_moving_features_apart_increases_the_loss() -> None:
    b = _features(16, 4, 8)
    near = b + 0.01 * _features(16, 4, 9)
    assert entropic_ot_loss(near, b) < entropic_ot_loss(-b, b)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        sinkhorn_log_plan(torch.ones(2, 2), epsilon=0.0)
    with pytest.raises(ConfigError, match="cosine_cost"):
        cosine_cost(torch.ones(2, 3), torch.ones(2, 4))
