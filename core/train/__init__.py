"""Training a Flux LoRA: the `Trainer` loop (`trainer`), its data (`data`: examples and batch
order), optimizers and schedules (`optim`), samples (`samples`), the flow-matching objective
(`flow`), caching (`encode`), adapters and files (`lora`), checkpoints (`checkpoint`) and
several GPUs (`distributed`). Memory plans live in `core/memory.py`: generation has them too.

This `__init__` imports nothing heavy: the UI lists checkpoints without torch.
"""

from ..errors import LoraboothError


class TrainingError(LoraboothError):
    """A problem the user can fix (no usable photos, a missing optimizer package, not enough
    GPU memory); the message says what to change."""
