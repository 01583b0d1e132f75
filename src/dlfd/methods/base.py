"""The contract every unlearning method shares: hyperparameters, inputs, run context, result.

A method is one function ``fn(model, data, params, ctx) -> dict | None`` that changes ``model``
in place (it receives a private copy of the original, already on ``ctx.device``) and may
return method-specific facts for the result's ``info``. Everything around it (copying,
seeding, timing, monitoring, validation-based selection, the result record) lives here and in
:mod:`dlfd.methods.api`, so every method runs under the same rules.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.config import check_bounds, setting, to_dict
from dlfd.errors import ConfigError
from dlfd.losses import correct_predictions, task_loss
from dlfd.metrics.matching import matched_indices
from dlfd.metrics.mia import loss_attack_fold_accuracies
from dlfd.recipe import TrainRecipe
from dlfd.training.loop import NonFiniteLossError, ProgressFn, Schedule, check_loss, check_model

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext

Task = Literal["multiclass", "multilabel"]

#: Fewest monitor samples per side for which the cross-validated attack is defined.
MIN_MONITOR_SAMPLES = 6


#: A method diverged (loss, weights or BatchNorm statistics NaN/inf): training's error type.
NonFiniteUnlearningError = NonFiniteLossError

#: The settings every method shares (not repeated when a divergence names the settings).
SHARED_SETTINGS = ("select", "selection", "monitor_attack", "save_threshold", "monitor_samples")

#: The shared selection rules (``MethodParams.selection``): ``forget_and_val`` keeps the best
#: validation accuracy among states whose forgetting score is <= ``save_threshold`` (else the
#: last state); ``val_only`` keeps the best validation accuracy and never reads the forget set.
Selection = Literal["forget_and_val", "val_only"]
SELECTION_RULES = get_args(Selection)
#: The monitor's attacks (``MethodParams.monitor_attack``): ``published`` is the benchmark's
#: balanced loss attack; ``matched`` runs it on subsamples cut to equal counts per class
#: (:mod:`dlfd.metrics.matching`), so a class mix differing between forget and validation
#: cannot pass for membership.
MonitorAttack = Literal["published", "matched"]
#: The rule recorded when no selection ran (no validation loader, or ``select=false``).
NO_SELECTION = "none"


#: Plausible ranges shared by the methods' settings (:func:`dlfd.config.setting` notation).
LR = "(0, 10]"
EPOCHS = "[1, 10000]"
MOMENTUM = "[0, 1)"
WEIGHT_DECAY = "[0, 1]"
#: Iteration counts (optimisation steps, Sinkhorn iterations, batches between readings).
COUNT = "[1, 1000000]"
#: Non-negative loss weights.
WEIGHT = "[0, 1000]"
#: Softmax temperatures.
TEMPERATURE = "(0, 100]"


@dataclass(frozen=True)
class MethodParams:
    """Settings every method has: the shared selection rule (:data:`Selection`), applied with a
    validation loader and ``select=True`` to each candidate state a method offers (every
    epoch's end; DLFD: every monitored batch), scored on fixed seeded subsamples. Constraints
    are declared on the fields and checked on construction (:mod:`dlfd.config`)."""

    select: bool = True
    selection: Selection = "forget_and_val"
    monitor_attack: MonitorAttack = "published"
    save_threshold: float = setting(0.09, "[0, 0.5]")
    monitor_samples: int = setting(256, f"[{MIN_MONITOR_SAMPLES}, 1000000]")

    #: The settings a divergence report names (None: all of the method's own settings).
    step_settings: ClassVar[tuple[str, ...] | None] = None

    def __post_init__(self) -> None:
        check_bounds(self)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks the declarations cannot express (override; raise ConfigError)."""

    def describe_settings(self) -> str:
        """``"lr=0.001, epochs=2, ..."``: the settings that govern the method's steps."""
        values = to_dict(self)
        names = self.step_settings or [n for n in values if n not in SHARED_SETTINGS]
        return ", ".join(f"{n}={format_setting(values[n])}" for n in names)


#: Largest numerator shown as ``k/255`` (a setting in 8-bit pixel units, e.g. 2/255).
MAX_PIXEL_STEPS = 4 * 255


def format_setting(value: Any, text: Any = str) -> str:
    """A setting's value for display only (stored values keep the exact float): a float that
    is ``k/255`` for a small integer ``k`` (within 1e-12) and has no short decimal form as
    ``k/255`` (``1/3`` rather than ``85/255``), any other float in ``:g`` form, a tuple or
    list element by element, anything else through ``text`` (``str``; ``repr`` shows strings
    quoted)."""
    if isinstance(value, float) and math.isfinite(value):
        short = f"{value:g}"
        k = round(value * 255)
        if (
            float(short) != value
            and 0 < abs(k) <= MAX_PIXEL_STEPS
            and k % 255
            and abs(value - k / 255) <= 1e-12
        ):
            whole = math.gcd(k, 255)
            if 255 // whole <= 5:  # a simple fraction reads better: 1/3, not 85/255
                return f"{k // whole}/{255 // whole}"
            return f"{k}/255"
        return short
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(format_setting(v, text) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return str(text(value))


@dataclass(frozen=True)
class TrainParams(MethodParams):
    """Settings of methods that train for epochs (a redeclared field keeps its range)."""

    epochs: int = setting(2, EPOCHS)
    lr: float = setting(0.001, LR)


@dataclass(frozen=True)
class SGDParams(TrainParams):
    """Settings of methods that train with SGD for a number of epochs."""

    momentum: float = setting(0.9, MOMENTUM)
    weight_decay: float = setting(5e-4, WEIGHT_DECAY)
    schedule: Schedule = "cosine"


@dataclass
class UnlearnData:
    """What a method may read. ``input_bounds``: per-channel (low, high) of valid images in the
    model's input space, broadcasting over (N, C, H, W), which methods that perturb images
    project onto; ``recipe``: how the original was trained (``retrain`` uses it)."""

    retain: DataLoader
    forget: DataLoader
    val: DataLoader | None = None
    task: Task = "multiclass"
    input_bounds: tuple[torch.Tensor, torch.Tensor] | None = None
    recipe: TrainRecipe | None = None


@dataclass(frozen=True)
class MonitorReading:
    """One monitoring point (``mia_acc``: NaN when the forget set is not read)."""

    where: str
    forgetting_score: float
    val_acc: float
    mia_acc: float
    seconds: float
    #: samples the attack scored (0 when the forget set is not read): the standard error of
    #: ``mia_acc`` is about ``0.5 / sqrt(attack_samples)`` (DLFD's confident switch)
    attack_samples: int = 0


class Monitor:
    """Forgetting score and validation accuracy on fixed subsamples (drawn once from ``seed``,
    kept as tensors), in eval mode. ``balance=False`` and ``samples=None`` reproduce the
    official DLFD code's attack (whole splits, unbalanced).
    ``read_forget=False``: no forget sample is ever scored, but the forget subsample is still
    drawn (then dropped) so the forget loader's random stream, hence the training, is the same
    under both rules. With ``dist`` the subsamples are assembled on rank 0 exactly as one
    process would draw them; only rank 0 can :meth:`read`."""

    def __init__(
        self,
        forget: DataLoader,
        val: DataLoader,
        *,
        task: str,
        device: torch.device,
        samples: int | None,
        seed: int,
        balance: bool = True,
        dist: DistributedContext | None = None,
        read_forget: bool = True,
        matched: bool = False,
    ) -> None:
        self.task = task
        self.device = device
        self.balance = balance
        self.read_forget = read_forget
        forget_data, forget_size = _subsample(forget, samples, seed, dist)
        val_data, val_size = _subsample(val, samples, seed + 1, dist)
        #: indices of the label-matched forget/validation samples the attack uses (None: all)
        self.matched: tuple[np.ndarray, np.ndarray] | None = None
        if matched and read_forget and forget_data is not None and val_data is not None:
            self.matched = matched_indices(forget_data[1], val_data[1], task)
            if self.matched[0].size < MIN_MONITOR_SAMPLES:
                raise ConfigError(
                    f"monitor_attack=matched: the forget and validation subsamples share only "
                    f"{self.matched[0].size} sample(s) per side after matching their classes; "
                    f"at least {MIN_MONITOR_SAMPLES} are needed (use monitor_attack=published)"
                )
        checked = [("forget", forget_size)] if read_forget else []
        for name, size in (*checked, ("validation", val_size)):
            if size == 0:
                raise ConfigError("a loader given for monitoring is empty")
            if size < MIN_MONITOR_SAMPLES:
                raise ConfigError(
                    f"the {name} split has {size} sample(s); monitoring the "
                    f"forgetting score needs at least {MIN_MONITOR_SAMPLES}"
                )
        #: (inputs, labels) of the subsamples; None off rank 0 (forget's: or when not read)
        self.forget = forget_data if read_forget else None
        self.val = val_data

    @torch.no_grad()
    def _losses(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        inputs, labels = batch
        losses, correct = [], []
        for start in range(0, inputs.shape[0], size):
            x = inputs[start : start + size].to(self.device)
            y = labels[start : start + size].to(self.device)
            logits = model(x).float()
            losses.append(task_loss(logits, y, self.task, reduction="none").cpu())
            correct.append(correct_predictions(logits, y, self.task).cpu())
        return torch.cat(losses).numpy(), torch.cat(correct).numpy()

    def read(self, model: nn.Module, where: str) -> MonitorReading:
        if self.val is None or (self.read_forget and self.forget is None):
            raise RuntimeError("in a distributed run only rank 0 holds the monitor's samples")
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            scored = {}
            if self.read_forget:
                assert self.forget is not None
                scored["forget"] = self._losses(model, self.forget)
            scored["validation"] = self._losses(model, self.val)
        finally:
            model.train(was_training)
        for name, (losses, _) in scored.items():
            bad = int((~np.isfinite(losses)).sum())
            if bad:
                raise NonFiniteLossError(
                    f"the eval-mode losses of {bad} of {losses.size} monitored {name} samples "
                    f"became non-finite at {where}"
                )
        val_losses, val_correct = scored["validation"]
        mia, attack_samples = math.nan, 0
        if self.read_forget:
            members, others = scored["forget"][0], val_losses
            if self.matched is not None:
                members, others = members[self.matched[0]], others[self.matched[1]]
            mia = float(loss_attack_fold_accuracies(members, others, balance=self.balance).mean())
            attack_samples = (
                2 * min(members.size, others.size) if self.balance else members.size + others.size
            )
        return MonitorReading(
            where=where,
            forgetting_score=abs(mia - 0.5),
            val_acc=float(val_correct.mean()),
            mia_acc=mia,
            seconds=time.perf_counter() - started,
            attack_samples=attack_samples,
        )


def _subsample(
    loader: DataLoader, samples: int | None, seed: int, dist: DistributedContext | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, int]:
    """A seeded subset of ``samples`` of one pass over ``loader``, and its size (with ``dist``:
    the data on rank 0 only)."""
    batches = list(loader)
    inputs, labels = [x for x, _ in batches], [y for _, y in batches]
    if dist is not None and dist.world_size > 1:
        return dist.gather_subsample(
            torch.cat(inputs) if inputs else None,
            torch.cat(labels) if labels else None,
            samples,
            seed,
        )
    if not inputs:
        return None, 0
    x, y = torch.cat(inputs), torch.cat(labels)
    if samples is not None and x.shape[0] > samples:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        keep = order[:samples].sort().values
        x, y = x[keep], y[keep]
    return (x, y), int(x.shape[0])


class Selector:
    """Keeps (in memory) the best state by validation accuracy among eligible readings
    (``forget_and_val``: forgetting score <= ``save_threshold``; ``val_only``: all)."""

    def __init__(self, save_threshold: float, rule: str = "forget_and_val") -> None:
        if rule not in SELECTION_RULES:
            raise ConfigError(
                f"unknown selection rule {rule!r}; choices: {', '.join(SELECTION_RULES)}"
            )
        self.save_threshold = save_threshold
        self.rule = rule
        #: readings considered so far (the number of candidate states examined)
        self.examined = 0
        self.best: MonitorReading | None = None
        self._state: dict[str, torch.Tensor] | None = None

    @property
    def reads_forget(self) -> bool:
        """Whether the rule reads the forget set (through the forgetting score)."""
        return self.rule == "forget_and_val"

    def consider(self, model: nn.Module, reading: MonitorReading) -> bool:
        self.examined += 1
        if self.reads_forget and reading.forgetting_score > self.save_threshold:
            return False
        if self.best is not None and reading.val_acc <= self.best.val_acc:
            return False
        self.best = reading
        self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def restore(self, model: nn.Module) -> str:
        """Load the kept state into ``model`` (if any) and say what was returned and why."""
        if self.best is None or self._state is None:
            if not self.reads_forget:
                return "last state: no state was offered for selection (selection=val_only)"
            return (
                f"last state: no monitored state had a forgetting score <= {self.save_threshold:g}"
            )
        model.load_state_dict(self._state)
        if not self.reads_forget:
            return (
                f"best state at {self.best.where}: val acc {self.best.val_acc:.4f} among all "
                f"{self.examined} monitored states (selection=val_only: forgetting score not read)"
            )
        return (
            f"best state at {self.best.where}: val acc {self.best.val_acc:.4f} among states with "
            f"forgetting score <= {self.save_threshold:g} (score {self.best.forgetting_score:.4f})"
        )

    def record(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "states_examined": self.examined,
            "read_forget": self.reads_forget,
            "save_threshold": self.save_threshold if self.reads_forget else None,
        }


def no_selection_record() -> dict[str, Any]:
    """The selection record of a run without selection (or a row taken from a checkpoint)."""
    return dict(rule=NO_SELECTION, states_examined=0, read_forget=False, save_threshold=None,
                method_reads_forget=False)  # fmt: skip


@dataclass
class RunContext:
    """What a running method uses besides its data: device, seed, monitoring, tracing. Methods
    call :meth:`checkpoint` where they offer a candidate state, :meth:`check_loss` on every loss
    they minimise, and :meth:`progress` as they advance. Data-parallel runs: loaders yield this
    rank's shard of every global batch; training forward passes go through :meth:`parallel`,
    everything else runs on the plain model; shared randomness comes from :meth:`generator`."""

    method: str
    params: MethodParams
    device: torch.device
    seed: int
    monitor: Monitor | None = None
    selector: Selector | None = None
    on_progress: ProgressFn | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    readings: list[MonitorReading] = field(default_factory=list)
    monitor_s: float = 0.0
    dist: DistributedContext | None = None
    _wrapped: int = 0

    @property
    def world_size(self) -> int:
        return 1 if self.dist is None else self.dist.world_size

    def generator(self, *parts: int | str, per_rank: bool = False) -> torch.Generator:
        """A CPU generator seeded from the run seed and ``parts`` (one per random purpose), the
        same on every rank unless ``per_rank`` (rank 0's is always the single-process one)."""
        from dlfd.runtime import derive_seed

        if per_rank and self.dist is not None and self.dist.rank > 0:
            parts = (*parts, "rank", self.dist.rank)
        return torch.Generator().manual_seed(derive_seed(self.seed, self.method, *parts))

    def parallel(self, model: nn.Module) -> nn.Module:
        """``model`` under DistributedDataParallel in a distributed run, else ``model``. Call it
        once per training phase, after deciding which parameters train; ranks other than 0
        then reseed the global generators (dropout) with seeds of their own."""
        if self.dist is None or self.dist.world_size == 1:
            return model
        wrapped = self.dist.wrap(model)
        self._wrapped += 1
        if self.dist.rank > 0:
            from dlfd.runtime import derive_seed, seed_everything

            seed_everything(
                derive_seed(self.seed, self.method, "rank", self.dist.rank, self._wrapped)
            )
        return wrapped

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The global batch of a per-rank tensor (gradients flow back to this rank's rows)."""
        return tensor if self.dist is None else self.dist.gather(tensor)

    def single_process_only(self, reason: str) -> None:
        if self.world_size > 1:
            raise ConfigError(
                f"method {self.method!r} cannot run data-parallel ({reason}); "
                f"run it with one process"
            )

    def checkpoint(self, model: nn.Module, where: str) -> MonitorReading | None:
        """Score the current state (when monitoring) and offer it to the selector. In a
        distributed run rank 0 reads (BatchNorm statistics set to its own first) and broadcasts
        the reading, so every rank takes the same decisions."""
        self.check_model(model, where=where)
        if self.monitor is None:
            return None
        started = time.perf_counter()
        dist = self.dist if self.world_size > 1 else None
        if dist is not None:
            dist.sync_buffers(model)
        answer: MonitorReading | str | None = None
        if dist is None or dist.is_main:
            try:
                answer = self.monitor.read(model, where)
            except NonFiniteLossError as exc:
                answer = str(exc)  # every rank stops, not only the one that read
        if dist is not None:
            answer = dist.broadcast_object(answer)
        if isinstance(answer, str):
            raise self.diverged(answer)
        assert answer is not None
        reading = answer
        self.monitor_s += reading.seconds if dist is None else time.perf_counter() - started
        self.readings.append(reading)
        if self.selector is not None:
            started = time.perf_counter()
            self.selector.consider(model, reading)
            self.monitor_s += time.perf_counter() - started
        return reading

    def diverged(self, what: str) -> NonFiniteLossError:
        settings = self.params.describe_settings()
        advice = (
            "lower the learning rate (or the other step settings shown) or check the inputs"
            if "lr=" in settings
            else "lower the settings shown or check the inputs"
        )
        return NonFiniteLossError(f"method {self.method!r} diverged: {what} ({settings}); {advice}")

    # Stop with a clear message when a loss, a tensor (``what``: e.g. "the noise") or a
    # parameter or buffer of ``model`` holds a NaN or an infinity.
    def check_loss(self, loss: torch.Tensor, *, where: str) -> None:
        check_loss(loss, where, self.diverged)

    def check_tensor(self, tensor: torch.Tensor, *, what: str, where: str) -> None:
        if not bool(torch.isfinite(tensor.detach()).all()):
            raise self.diverged(f"{what} became non-finite at {where}")

    def check_model(self, model: nn.Module, *, where: str) -> None:
        check_model(model, where, self.diverged)

    def progress(self, done: int, total: int, phase: str = "") -> None:
        if self.on_progress is not None:
            self.on_progress(done, total, phase or self.method)

    def log(self, **record: Any) -> None:
        self.trace.append(record)


@dataclass
class UnlearnResult:
    """What :func:`dlfd.methods.unlearn` returns: the model and a record of what happened."""

    model: nn.Module
    method: str
    params: dict[str, Any]
    seed: int
    device: str
    selected: str
    wall_s: float
    train_s: float
    monitor_s: float
    trace: list[dict[str, Any]]
    readings: list[dict[str, Any]]
    info: dict[str, Any]
    #: Processes of a data-parallel run (1: a single process).
    world_size: int = 1
    #: What the shared selection did: ``rule`` (``forget_and_val``, ``val_only`` or ``none``),
    #: ``states_examined``, ``read_forget`` (the rule read the forget set), ``save_threshold``
    #: (None unless used) and ``method_reads_forget`` (the method's own algorithm reads the
    #: forgetting score: DLFD's dynamic switch; not part of the selection).
    selection: dict[str, Any] = field(default_factory=no_selection_record)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"
        }


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with gradients off (teachers, references)."""
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher
