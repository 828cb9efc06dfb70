"""What one training step costs in memory and time under each memory-saving strategy.

A strategy is a combination of switches the trainer offers: activation checkpointing (full, or
selective: attention outputs kept), bf16 or fp16 autocast, channels-last memory layout. For each one
`measure_strategies` runs real training steps (forward, cross-entropy, backward, AdamW step) of the
model and reports:

- `activation_bytes`: the bytes autograd keeps from forward to backward, counted with hooks on saved
  tensors (`torch.autograd.graph.saved_tensors_hooks`), each storage once, parameters left out. With
  checkpointing this is what the checkpointed segments keep (their inputs); recomputing one segment in
  backward adds that segment's activations for a moment, which only a device's peak counter sees.
- `peak_bytes`: on a GPU, the device's peak allocation over one step (`torch.cuda.max_memory_allocated`);
  on a CPU, which has no such counter, activations + parameters + gradients + optimizer state.
- `step_time_s`: the median wall time of the timed steps (after a warm-up step); `cpu_time_s` the
  median CPU time of the same steps (all threads of the process), which other programs on a shared
  machine change much less than the wall time.

`timed=False` counts instead of running: the step runs on fake tensors (`FakeTensorMode`: shapes and
dtypes, no data, no arithmetic), so a strategy the machine computes slowly (bf16 on a CPU without
bf16 units) is counted in seconds. Its counts equal a real step's in fp32; under autocast they differ
by PyTorch's shape functions giving a normalisation layer's saved mean and inverse deviation in the
input's dtype where the CPU kernels keep float32 (a few bytes per token and layer; 0.1-0.4% of the
activations in the tests). No time is reported.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.stateless import _reparametrize_module

from tubelet.engine.trainer import autocast, grad_scaler, to_channels_last

# Switches a strategy name combines with "+": "checkpointing+bf16". "baseline" is none of them.
# "checkpointing" recomputes whole blocks; "selective_checkpointing" keeps their attention outputs.
SWITCHES = ("checkpointing", "selective_checkpointing", "bf16", "fp16", "channels_last")
_LEVELS = {"checkpointing": "full", "selective_checkpointing": "selective"}
DEFAULT_STRATEGIES = ("baseline", "checkpointing", "bf16", "checkpointing+bf16")


@dataclass(frozen=True)
class Strategy:
    """One combination of memory-saving switches; `checkpointing` is None, "full" or "selective"
    (the level `set_grad_checkpointing` takes)."""

    checkpointing: str | None = None
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.checkpointing not in (None, *_LEVELS.values()):
            raise ValueError(
                f"checkpointing must be None, 'full' or 'selective', got {self.checkpointing!r}"
            )

    @property
    def name(self) -> str:
        """ "baseline" or the switches joined by "+", in `SWITCHES` order."""
        switch = {level: word for word, level in _LEVELS.items()}.get(self.checkpointing or "")
        parts = [
            on
            for on, flag in (
                (switch, switch is not None),
                (self.precision, self.precision != "fp32"),
                ("channels_last", self.channels_last),
            )
            if flag
        ]
        return "+".join(parts) or "baseline"

    @classmethod
    def parse(cls, text: str) -> Strategy:
        """`"checkpointing+bf16"` -> Strategy(checkpointing=True, precision="bf16")."""
        words = [w.strip() for w in text.lower().split("+") if w.strip()]
        if words == ["baseline"]:
            return cls()
        unknown = [w for w in words if w not in SWITCHES]
        if not words or unknown:
            raise ValueError(
                f"unknown strategy {text!r}: use 'baseline' or switches joined by '+' from "
                f"{', '.join(SWITCHES)} (e.g. checkpointing+bf16)"
            )
        if "bf16" in words and "fp16" in words:
            raise ValueError(f"strategy {text!r} asks for both bf16 and fp16; pick one")
        levels = [_LEVELS[w] for w in words if w in _LEVELS]
        if len(levels) > 1:
            raise ValueError(
                f"strategy {text!r} asks for two checkpointing levels; pick checkpointing or "
                "selective_checkpointing"
            )
        precision = next((w for w in words if w in ("bf16", "fp16")), "fp32")
        return cls(
            checkpointing=levels[0] if levels else None,
            precision=precision,
            channels_last="channels_last" in words,
        )


def all_combinations(switches: Sequence[str] = ("checkpointing", "bf16")) -> list[Strategy]:
    """The baseline and every combination of `switches` (bf16 and fp16 never together, nor the
    two checkpointing levels)."""
    strategies = []
    for n in range(len(switches) + 1):
        for combo in itertools.combinations(switches, n):
            if {"bf16", "fp16"} <= set(combo) or set(_LEVELS) <= set(combo):
                continue
            strategies.append(Strategy.parse("+".join(combo) or "baseline"))
    return strategies


@dataclass(frozen=True)
class MemoryRow:
    """The measurements of one strategy; `as_dict()` gives the JSON row of `tubelet memory --json`.
    The times are None when the step was counted on fake tensors, not run."""

    strategy: str
    activation_bytes: int
    peak_bytes: int
    step_time_s: float | None
    cpu_time_s: float | None
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    device: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "activation_bytes": self.activation_bytes,
            "peak_bytes": self.peak_bytes,
            "step_time_s": self.step_time_s,
            "cpu_time_s": self.cpu_time_s,
            "param_bytes": self.param_bytes,
            "grad_bytes": self.grad_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "device": self.device,
        }


@contextmanager
def saved_tensor_bytes(skip: Iterable[Tensor] = ()) -> Iterator[dict[int, int]]:
    """Inside the block, record {storage id: bytes} of every tensor autograd saves for backward,
    each storage once, leaving out the storages of the tensors in `skip` (the parameters)."""
    # A storage is named by its C++ object (`_cdata`), which fake tensors also have (no data_ptr).
    skipped = {t.untyped_storage()._cdata for t in skip}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skipped and storage.nbytes() > 0:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the tensors among `tensors` (other values are ignored)."""
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of an optimizer's state tensors (AdamW: two moments and a step count per parameter)."""
    return sum(tensor_bytes(state.values()) for state in optimizer.state.values())


# (model, video, labels) -> loss; the model is called as model(video).
LossFn = Callable[[Callable[[Tensor], Tensor], Tensor, Tensor], Tensor]


def classification_loss(model: Callable[[Tensor], Tensor], video: Tensor, labels: Tensor) -> Tensor:
    """The loss `measure_strategies` trains with by default: cross-entropy of the logits, in fp32."""
    return F.cross_entropy(model(video).float(), labels)


def measure_strategies(
    model: nn.Module,
    video: Tensor,
    labels: Tensor,
    strategies: Sequence[Strategy],
    *,
    repeats: int = 3,
    timed: bool = True,
    loss_fn: LossFn = classification_loss,
    device: torch.device | None = None,
) -> list[MemoryRow]:
    """Measure training steps of `model` on (`video`, `labels`) under each strategy.

    One model and one AdamW optimizer serve every strategy (switched in turn as the trainer would
    switch them on), after one warm-up step, so each row's figures hold the optimizer state.
    Each strategy gets one step that counts the saved tensors (and on a GPU the peak), which is also
    its warm-up; then the strategies take turns for `repeats` timed rounds, so a machine whose load
    changes slows them alike. `timed=False` runs no real step: each strategy's step is counted on
    fake tensors (`fake_step_bytes`) and the rows have no times; then `video` and `labels` may be
    meta tensors (shapes only, nothing allocated) and `device` the device counted for (default:
    `video.device`).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = device or video.device
    if video.is_meta and timed:
        raise ValueError("a batch on the meta device can only be counted (timed=False)")
    on_meta = any(p.is_meta for p in model.parameters())  # built to be counted, not run
    if on_meta and timed:
        raise ValueError("a model on the meta device can only be counted (timed=False)")
    model = (model if on_meta else model.to(device)).train()
    if not timed:
        rows = []
        for strategy in strategies:
            sizes = fake_step_bytes(model, video, labels, strategy, loss_fn, device=device)
            rows.append(
                MemoryRow(
                    strategy=strategy.name, activation_bytes=sizes[0], peak_bytes=sum(sizes),
                    step_time_s=None, cpu_time_s=None, param_bytes=sizes[1], grad_bytes=sizes[2],
                    optimizer_bytes=sizes[3], device=str(device),
                )
            )  # fmt: skip
        return rows
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scalers = {s: grad_scaler(device, s.precision) for s in (Strategy(), *strategies)}

    def step(strategy: Strategy, count_saved: bool = False) -> int:
        """One training step; the bytes saved for backward when `count_saved`."""
        _switch(model, strategy)
        clip = to_channels_last(video) if strategy.channels_last else video
        scaler = scalers[strategy]
        optimizer.zero_grad(set_to_none=True)
        saved: dict[int, int] = {}
        with autocast(device, strategy.precision):
            if count_saved:
                with saved_tensor_bytes(params) as saved:
                    loss = loss_fn(model, clip, labels)
            else:
                loss = loss_fn(model, clip, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        _sync(device)
        return sum(saved.values())

    step(Strategy())  # allocates the optimizer state
    measured = {}
    for strategy in strategies:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        activations = step(strategy, count_saved=True)
        sizes = (
            tensor_bytes(model.parameters()),
            tensor_bytes(p.grad for p in params),
            optimizer_bytes(optimizer),
        )
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        measured[strategy] = (activations, sizes, peak)
    times: dict[Strategy, list[tuple[float, float]]] = {s: [] for s in strategies}
    for _ in range(repeats):
        for strategy in strategies:
            wall, cpu = time.perf_counter(), time.process_time()
            step(strategy)
            times[strategy].append((time.perf_counter() - wall, time.process_time() - cpu))
    rows = []
    for strategy in strategies:
        activations, (param_bytes, grad_bytes, optim_bytes), peak = measured[strategy]
        rows.append(
            MemoryRow(
                strategy=strategy.name,
                activation_bytes=activations,
                peak_bytes=peak or activations + param_bytes + grad_bytes + optim_bytes,
                step_time_s=statistics.median(wall for wall, _ in times[strategy]),
                cpu_time_s=statistics.median(cpu for _, cpu in times[strategy]),
                param_bytes=param_bytes,
                grad_bytes=grad_bytes,
                optimizer_bytes=optim_bytes,
                device=str(device),
            )
        )
    return rows


def fake_step_bytes(
    model: nn.Module,
    video: Tensor,
    labels: Tensor,
    strategy: Strategy,
    loss_fn: LossFn = classification_loss,
    *,
    device: torch.device | None = None,
) -> tuple[int, int, int, int]:
    """(activation, parameter, gradient, AdamW state) bytes of one training step of `model` under
    `strategy`, run on fake copies of its parameters, buffers and inputs (`FakeTensorMode`): every
    op yields a tensor of the right shape and dtype and computes nothing, so the step takes seconds
    whatever the machine. Meta parameters and inputs (shapes only) become fake tensors on `device`
    (default: `video.device`), so neither the model nor the batch needs real memory. The model
    itself is left as it was (its checkpointing is switched as `strategy` says, as for a real step).
    """
    device = device or video.device
    _switch(model, strategy)
    clip = to_channels_last(video) if strategy.channels_last else video
    # allow_non_fake_inputs: constants a model creates outside the step (cached tables) join in.
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        params = {k: _fake(mode, p, device) for k, p in model.named_parameters()}
        buffers = {k: _fake(mode, b, device) for k, b in model.named_buffers()}
        trained = [p for p in params.values() if p.requires_grad]
        fake_clip, fake_labels = _fake(mode, clip, device), _fake(mode, labels, device)
        # The fake weights stay in the model through backward too, where checkpointed blocks
        # run their forward again (functional_call would put the real ones back before that).
        with _reparametrize_module(model, {**params, **buffers}):
            with autocast(device, strategy.precision), saved_tensor_bytes(trained) as saved:
                loss = loss_fn(model, fake_clip, fake_labels)
            loss.backward()  # fp16 loss scaling changes no tensor's size
        optimizer = torch.optim.AdamW(trained, lr=1e-4)
        optimizer.step()
        return (
            sum(saved.values()),
            tensor_bytes(params.values()),
            tensor_bytes(p.grad for p in trained),
            optimizer_bytes(optimizer),
        )


def _fake(mode: FakeTensorMode, tensor: Tensor, device: torch.device) -> Tensor:
    """A fake copy of `tensor`; a meta tensor (a model or batch built without memory, see
    `memory_report`) becomes a fake tensor on `device`."""
    if tensor.is_meta:
        fake = mode.fake_tensor_converter.from_meta_and_device(mode, tensor, device)
        return fake.requires_grad_(tensor.requires_grad)
    return mode.from_tensor(tensor)


def generation_loss(model: Callable[..., Tensor], clip: Tensor, labels: Tensor) -> Tensor:
    """A denoiser's training loss (flow matching's MSE to a velocity target) on a noisy clip or
    latents; a text-conditioned model (`text_dim`) attends to `labels`, here the text embeddings
    (B, L, text_dim), else `labels` are class labels."""
    t = torch.rand(clip.shape[0], device=clip.device) * 1000
    target = torch.randn_like(clip)
    cond = {"context": labels} if labels.is_floating_point() else {"class_labels": labels}
    out = model(clip, t, **cond)
    return F.mse_loss(out.float(), target.float())


# A text-to-video denoiser's input: latents of the Wan 2.1 VAE (4x in time, 8x in space) and
# UMT5 text embeddings padded to 512 tokens, as Wan trains.
WAN_VAE_FACTORS = (4, 8)
TEXT_TOKENS = 512


def _switch(model: nn.Module, strategy: Strategy) -> None:
    """Put `model` in the state `strategy` asks for: checkpointing on or off, weight layout."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(strategy.checkpointing or False)
    elif strategy.checkpointing:
        raise ValueError(f"{type(model).__name__} has no set_grad_checkpointing()")
    if strategy.channels_last:
        to_channels_last(model)
    else:
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_report(
    model_name: str,
    *,
    frames: int,
    size: int,
    batch: int,
    strategies: Sequence[Strategy] | None = None,
    model_args: dict[str, Any] | None = None,
    num_classes: int = 10,
    repeats: int = 3,
    timed: bool = True,
    device: torch.device | None = None,
    height: int | None = None,
    width: int | None = None,
    lora_rank: int | None = None,
) -> list[MemoryRow]:
    """Measure one training step of registered model `model_name` on random clips
    (batch, 3, frames, height, width) (`size` x `size` unless `height`/`width` are given) under
    each strategy (the defaults: `DEFAULT_STRATEGIES`); `timed=False` counts the steps on fake
    tensors instead (see `measure_strategies`).

    A classifier trains with cross-entropy. A generation model trains as a denoiser
    (`generation_loss`); a text-conditioned one (`wan_dit`) on the latents of the Wan VAE of such
    clips (1 + (frames - 1) / 4 frames, sides / 8) with 512 text tokens. `lora_rank` trains LoRA
    adapters of that rank on its attention and MLP projections, the base frozen (`tubelet.nn.lora`).
    Counting builds the model and the batch on the meta device (no memory, no initialisation), so a
    model of billions of parameters or a batch of thousands of clips is counted in seconds; a timed
    run has random weights (seeded), and is first counted that way and refused (ValueError) when
    its need exceeds the memory `device` has free (`free_bytes`).
    """
    from tubelet.models import create_model, model_kind

    height, width = height or size, width or size
    for name, value in (("frames", frames), ("height", height), ("width", width), ("batch", batch)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    strategies = list(strategies or [Strategy.parse(s) for s in DEFAULT_STRATEGIES])
    if timed:  # count first (seconds, nothing allocated) and refuse what cannot fit
        counted = memory_report(
            model_name, frames=frames, size=size, batch=batch, strategies=strategies,
            model_args=model_args, num_classes=num_classes, timed=False, device=device,
            height=height, width=width, lora_rank=lora_rank,
        )  # fmt: skip
        _check_fits(counted, device)
    generation = model_kind(model_name) == "generation"
    args = dict(model_args or {})
    if not generation:
        args["num_classes"] = num_classes
    torch.manual_seed(0)
    if timed:
        model = create_model(model_name, **args)
    else:
        with torch.device("meta"):
            model = create_model(model_name, **args)
    if lora_rank is not None:
        if not generation:
            raise ValueError(
                f"--lora-rank counts LoRA fine-tuning of a generation model, not {model_name}"
            )
        from tubelet.nn.lora import LoraSpec, add_lora  # PEFT imports slowly

        add_lora(model, LoraSpec(lora_rank, float(lora_rank)))
    text_dim = getattr(model, "text_dim", None)
    if generation and text_dim is not None:
        t_factor, s_factor = WAN_VAE_FACTORS
        if (frames - 1) % t_factor or height % (2 * s_factor) or width % (2 * s_factor):
            raise ValueError(
                f"{model_name} takes Wan VAE latents: frames 1 + 4k and sides divisible by 16, "
                f"got {frames} frames of {height}x{width}"
            )
        shape = (
            model.in_channels,
            1 + (frames - 1) // t_factor,
            height // s_factor,
            width // s_factor,
        )
    else:
        shape = (3, frames, height, width)
    loss_fn = generation_loss if generation else classification_loss
    if not timed:  # shapes only: the batch is allocated nowhere (fake tensors on `device`)
        video = torch.empty(batch, *shape, device="meta")
        labels = (
            torch.empty(batch, TEXT_TOKENS, text_dim, device="meta")
            if generation and text_dim is not None
            else torch.empty(batch, dtype=torch.long, device="meta")
        )
        return measure_strategies(
            model, video, labels, strategies, timed=False, loss_fn=loss_fn, device=device
        )
    generator = torch.Generator().manual_seed(0)
    if generation and text_dim is not None:
        labels = torch.randn(batch, TEXT_TOKENS, text_dim, generator=generator).to(device)
    else:
        labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    video = torch.randn(batch, *shape, generator=generator).to(device)
    return measure_strategies(
        model, video, labels, strategies, repeats=repeats, timed=timed, loss_fn=loss_fn
    )


def free_bytes(device: torch.device) -> int | None:
    """The memory `device` has free now: a GPU's free memory (`torch.cuda.mem_get_info`), the
    RAM the system can still give (MemAvailable of /proc/meminfo, else psutil); None where unknown.
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def _check_fits(counted: Sequence[MemoryRow], device: torch.device) -> None:
    """Refuse (ValueError, one line) a real run whose counted need exceeds what `device` has free.
    The need is the largest strategy's total (activations, which hold the batch, + parameters,
    gradients and AdamW state), all held at once by the real step."""
    worst = max(counted, key=lambda row: row.peak_bytes)
    free = free_bytes(device)
    if free is None or worst.peak_bytes <= free:
        return
    raise ValueError(
        f"one training step needs about {worst.peak_bytes / 2**30:.2f} GiB ({worst.strategy}, "
        f"counted on fake tensors) but {device} has {free / 2**30:.2f} GiB free: use a smaller "
        "--batch, --count-only to count without running, or -s checkpointing"
    )
