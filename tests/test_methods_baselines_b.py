"""What makes bad_teacher, unsir, scrub and ssd those methods (beyond the shared contract)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlfd.losses import distill_kl, task_loss
from dlfd.methods import get_method, unlearn
from dlfd.methods.bad_teacher import bad_teacher_loss, incompetent_teacher
from dlfd.methods.base import RunContext, frozen_copy
from dlfd.methods.common import fisher_diagonal, sgd
from dlfd.methods.scrub import distill_pass, max_loss, min_loss
from dlfd.methods.unsir import error_maximising_noise
from dlfd.models import create_model

IMAGE = (3, 16, 16)
CLASSES = 3
CPU = torch.device("cpu")


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *IMAGE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def _loader(n: int, seed: int) -> DataLoader:
    return DataLoader(TensorDataset(*_data(n, seed)), batch_size=8, shuffle=False)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", CLASSES)


def _ctx(key: str, seed: int = 0, **overrides: object) -> RunContext:
    params = get_method(key).make_params(overrides)
    return RunContext(method=key, params=params, device=CPU, seed=seed)


@torch.no_grad()
def _kl(student: nn.Module, teacher: nn.Module, inputs: torch.Tensor, t: float = 1.0) -> float:
    student.eval()
    return distill_kl(student(inputs), teacher(inputs), "multiclass", t).item()


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


# ---------------------------------------------------------------- SCRUB


def test_scrub_max_pass_increases_kl_to_teacher_on_forget() -> None:
    model = _model()
    teacher = frozen_copy(model)
    forget_x, _ = _data(16, 2)
    optimizer = sgd(model.parameters(), lr=0.01)
    ctx = _ctx("scrub")
    kls = [_kl(model, teacher, forget_x, 4.0)]
    for _ in range(2):
        distill_pass(
            model, teacher, _loader(16, 2), optimizer, ctx, max_loss("multiclass", 4.0), phase="max"
        )
        kls.append(_kl(model, teacher, forget_x, 4.0))
    assert kls[0] == 0.0
    assert kls[0] < kls[1] < kls[2]


def test_scrub_losses_use_temperature_and_distinct_weighted_terms() -> None:
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, CLASSES, generator=g), torch.randn(8, CLASSES, generator=g)
    labels = torch.randint(0, CLASSES, (8,), generator=g)
    assert max_loss("multiclass", 1.0)(student, teacher, labels) != max_loss("multiclass", 4.0)(
        student, teacher, labels
    )
    assert torch.allclose(
        max_loss("multiclass", 4.0)(student, teacher, labels),
        -distill_kl(student, teacher, "multiclass", 4.0),
    )
    ce = task_loss(student, labels, "multiclass")
    kl = distill_kl(student, teacher, "multiclass", 4.0)
    mixed = min_loss("multiclass", 4.0, alpha=0.3, gamma=0.7)(student, teacher, labels)
    assert torch.allclose(mixed, 0.7 * ce + 0.3 * kl)


def test_scrub_honours_msteps() -> None:
    result = unlearn(
        _model(),
        _loader(24, 1),
        _loader(8, 2),
        method="scrub",
        epochs=2,
        msteps=1,
        lr=0.01,
    )
    assert [(r["phase"], r["epoch"]) for r in result.trace] == [("max", 1), ("min", 1), ("min", 2)]


# ---------------------------------------------------------------- SSD


def _expected_ssd(
    model: nn.Module, alpha: float, lam: float, importance: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    forget_loader, retain_loader = _loader(16, 2), _loader(48, 1)
    forget = fisher_diagonal(model, forget_loader, "multiclass", CPU)
    retain = fisher_diagonal(model, retain_loader, "multiclass", CPU)
    if importance == "full":
        nf, nr = len(forget_loader), len(retain_loader)
        data = {n: (retain[n] * nr + forget[n] * nf) / (nr + nf) for n in forget}
    else:
        data = retain
    selected = {n: forget[n] > alpha * data[n] for n in forget}
    beta = {n: torch.clamp(lam * data[n] / forget[n], max=1.0) for n in forget}
    return selected, beta


def test_ssd_dampens_exactly_the_selected_elements_and_never_grows_them() -> None:
    for importance, alpha, lam in (("retain", 2.0, 1.0), ("full", 1.5, 0.5)):
        model = _model()
        selected, beta = _expected_ssd(model, alpha, lam, importance)
        result = unlearn(
            model,
            _loader(48, 1),
            _loader(16, 2),
            method="ssd",
            alpha=alpha,
            lam=lam,
            importance=importance,
        )
        before = dict(model.named_parameters())
        after = dict(result.model.named_parameters())
        chosen = sum(int(s.sum()) for s in selected.values())
        total = sum(s.numel() for s in selected.values())
        assert 0 < chosen < total
        assert result.info["dampened_elements"] == chosen
        for name, old in before.items():
            old, new, mask = old.detach(), after[name].detach(), selected[name]
            assert torch.equal(new[~mask], old[~mask]), name
            assert torch.allclose(new[mask], old[mask] * beta[name][mask], rtol=1e-6, atol=0)
            assert bool((new.abs() <= old.abs()).all()), name
        # no training: BatchNorm statistics are untouched
        for name, buffer in model.named_buffers():
            assert torch.equal(dict(result.model.named_buffers())[name], buffer)


# ---------------------------------------------------------------- UNSIR


def test_unsir_noise_maximises_forget_loss_within_bounds_without_touching_the_model() -> None:
    model = _model()
    model.train()
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers_before = _buffers(model)
    _, labels = _data(8, 2)
    init = torch.randn(8, *IMAGE, generator=torch.Generator().manual_seed(3))
    low, high = torch.full((3, 1, 1), -0.5), torch.full((3, 1, 1), 0.5)
    noise = error_maximising_noise(
        model, init, labels, "multiclass", steps=5, lr=0.1, l2=0.0, bounds=(low, high)
    )
    assert model.training
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), f"noise generation changed {name}"
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params_before[name]) and p.grad is None
    assert bool((noise >= low).all() and (noise <= high).all())
    model.eval()
    with torch.no_grad():
        start = task_loss(model(init.clamp(-0.5, 0.5)), labels, "multiclass")
        end = task_loss(model(noise), labels, "multiclass")
    assert end > start


def test_unsir_l2_penalty_shrinks_noise() -> None:
    model = _model()
    _, labels = _data(8, 2)
    init = torch.randn(8, *IMAGE, generator=torch.Generator().manual_seed(3))
    free = error_maximising_noise(model, init, labels, "multiclass", steps=5, lr=0.1, l2=0.0)
    small = error_maximising_noise(model, init, labels, "multiclass", steps=5, lr=0.1, l2=10.0)
    assert small.norm() < free.norm()


# ---------------------------------------------------------------- Bad Teacher


def test_incompetent_teacher_is_random_seeded_and_leaves_global_rng_alone() -> None:
    model = _model()
    state = torch.get_rng_state()
    first = incompetent_teacher(model, _ctx("bad_teacher", seed=1))
    assert torch.equal(torch.get_rng_state(), state)
    again = incompetent_teacher(model, _ctx("bad_teacher", seed=1))
    other = incompetent_teacher(model, _ctx("bad_teacher", seed=2))
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    for (name, a), b, c, m in zip(
        first.state_dict().items(),
        again.state_dict().values(),
        other.state_dict().values(),
        model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), name
        if name.endswith("weight") and "features.0.0" in name:
            assert not torch.equal(a, c) and not torch.equal(a, m)


def test_bad_teacher_loss_picks_the_teacher_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    student, good, bad = (torch.randn(4, CLASSES, generator=g) for _ in range(3))
    flags = torch.tensor([False, True, False, True])
    loss = bad_teacher_loss(student, good, bad, flags, "multiclass", 2.0)
    per_sample = [
        distill_kl(student[i : i + 1], (bad if flags[i] else good)[i : i + 1], "multiclass", 2.0)
        for i in range(4)
    ]
    assert torch.allclose(loss, torch.stack(per_sample).mean())
    assert bad_teacher_loss(student, student, student, flags, "multiclass", 2.0).abs() < 1e-6


def test_bad_teacher_moves_forget_outputs_toward_the_random_teacher_with_bounded_loss() -> None:
    model = _model()
    forget_x, _ = _data(16, 2)
    retain_x, _ = _data(48, 1)
    bad = incompetent_teacher(model, _ctx("bad_teacher", seed=4))
    result = unlearn(
        model,
        _loader(48, 1),
        _loader(16, 2),
        method="bad_teacher",
        seed=4,
        epochs=3,
        lr=1e-3,
    )
    assert _kl(result.model, bad, forget_x) < _kl(model, bad, forget_x)
    # retain outputs stay closer to the original than forget outputs do
    assert _kl(result.model, model, retain_x) < _kl(result.model, model, forget_x)
    losses = [r["loss"] for r in result.trace]
    assert all(0.0 <= loss < 10.0 for loss in losses)
    assert losses[-1] <= losses[0]
