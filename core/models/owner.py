"""The one owner of a process's loaded pipeline.

A 12B model fits a GPU once. Whatever needs it (a training run, a generation job, a prompt
rendered between training steps) borrows it here and gives it back; nothing else keeps a
reference across jobs. The owner knows which model is resident, in which precision and
quantisation, and whether training holds it now, so a request for another model or precision
frees the resident one *before* loading (never two copies at once).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .load import load_pipeline
from .resolve import ModelSource

if TYPE_CHECKING:
    import torch

    from ..generate.generator import Generator
    from ..memory import Plan
    from ..train.trainer import Trainer


class ModelOwner:
    def __init__(self) -> None:
        self.source: ModelSource | None = None
        self.pipe: Any = None
        self.quantize: str | None = None
        self.offload = False  # diffusers' model CPU offload is on
        self.training = False  # a Trainer holds the pipeline (its LoRA attached, in train mode)
        self._generator: Generator | None = None

    def resident(self, source: ModelSource, dtype: torch.dtype | None = None,
                 quantize: str | None = None) -> bool:
        """Whether the loaded pipeline is `source` at this precision and quantisation."""
        if self.pipe is None or self.source is None or self.source.spec != source.spec:
            return False
        if quantize != self.quantize:
            return False
        return dtype is None or self.pipe.transformer.dtype == dtype

    def host_gib(self) -> float:
        """GiB of weights the loaded pipeline holds in CPU memory (a model waiting there, T5
        pinned to stream from it, models under offload): freed or reused by the next job, so
        they count as available to it."""
        if self.pipe is None:
            return 0.0
        import torch

        seen: set[int] = set()
        total = 0
        for module in self.pipe.components.values():
            if not isinstance(module, torch.nn.Module):
                continue
            for tensor in (*module.parameters(), *module.buffers()):
                if tensor.device.type == "cpu" and id(tensor) not in seen:
                    seen.add(id(tensor))
                    total += tensor.numel() * tensor.element_size()
        return total / 2**30

    def drop(self) -> None:
        """Free the loaded pipeline (and the GPU memory it held)."""
        if self.pipe is None:
            return
        self.pipe = self.source = self._generator = None
        self.quantize = None
        self.offload = False
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load(self, source: ModelSource, dtype: torch.dtype | None, device: Any,
              quantize: str | None, placement: str = "all") -> None:
        self.drop()  # before loading: the old copy must not be resident beside the new one
        self.pipe = load_pipeline(source, dtype, device, quantize, placement)
        self.source, self.quantize = source, quantize
        self.offload = getattr(self.pipe, "lorabooth_offload", False)

    # -- training ---------------------------------------------------------------------------

    def borrow_for_training(self, source: ModelSource, dtype: torch.dtype, device: Any,
                            quantize: str | None, placement: str = "all") -> tuple[Any, bool]:
        """The pipeline for a training run: the resident one when it fits, with any adapters a
        generation job loaded taken out; not one whose layers generation swapped for fp8 ones
        (they slow a LoRA step: bench/results/gpu.json, run 9). Returns (pipeline, loaded from
        disk now)."""
        from .fp8 import uses_fp8_matmuls

        loaded = (not self.resident(source, dtype, quantize)
                  or uses_fp8_matmuls(self.pipe.transformer))
        if loaded:
            self._load(source, dtype, device, quantize, placement)
        else:
            from .load import place

            self.pipe.unload_lora_weights()
            if self.offload:  # offload left every model on the CPU
                self.pipe.remove_all_hooks()
            # as this run's plan says, whatever a generation job did (T5 streamed, say)
            self.offload = place(self.pipe, device, placement, quantize)
        self._generator = None  # its adapter bookkeeping no longer holds
        self.training = True
        return self.pipe, loaded

    def give_back(self, restore: Callable[[Any], None]) -> None:
        """Training is over: `restore` puts the pipeline back as generation wants it."""
        if self.pipe is not None and self.training:
            restore(self.pipe)
        self.training = False

    def training_generator(self, trainer: Trainer) -> Generator:
        """A generator over the pipeline as training holds it, the LoRA as it is now, in the
        trainer's precision; prompts are encoded through the trainer's cached encoder."""
        from ..generate.generator import Generator

        return Generator(self.source, self.pipe, encode=trainer.pipe_text,
                         precision=trainer.precision)

    # -- generation ---------------------------------------------------------------------------

    def generator(self, source: ModelSource, plan: Plan | None = None) -> Generator:
        """A warm generator for `source` as `plan` says (precision, storage, placement), loading
        it (and freeing another model) if needed; without a plan, whatever is resident."""
        import torch

        from ..generate.generator import Generator
        from .load import default_device, place

        dtype = getattr(torch, plan.dtype) if plan else None
        quantize = plan.quantize if plan else self.quantize
        if plan is not None:
            placement = plan.placement
        else:  # whatever is resident, as it is
            placement = "offload" if self.offload else "all"
        resident = self.resident(source, dtype, quantize)
        if plan is not None:  # before loading: a killed process would say nothing
            from ..system_memory import require_system_memory

            require_system_memory(plan, self.host_gib(), loading=not resident)
        if not resident:
            self._load(source, dtype, None, quantize, placement)
        elif not (self.offload and placement == "offload"):
            # Training may have left models where it wanted them (T5 in CPU memory), and an
            # earlier job may have placed them otherwise: place() moves only what differs.
            was_offloaded = self.offload
            if was_offloaded:
                self.pipe.remove_all_hooks()
            self.offload = place(self.pipe, default_device(), placement, self.quantize)
            if self.offload != was_offloaded:
                self._generator = None
        if self._generator is None:
            self._generator = Generator(self.source, self.pipe)
        return self._generator
