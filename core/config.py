"""The workspace config, `lorabooth.toml`: schema, defaults, validation and comment-keeping writes.

The schema is the dataclasses below. Each field's metadata holds its help text (written as a
comment by `lorabooth init`) and its allowed values, so the file, the checks and the error
messages never drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .errors import EXIT_USAGE, LoraboothError
from .fsutil import atomic_write_text

CONFIG_NAME = "lorabooth.toml"
MAX_STEPS = 1_000_000  # train.steps, and --steps on the command line

OPTIMIZERS = ("adamw", "adamw8bit", "prodigy", "adafactor")
TIMESTEP_SAMPLING = ("sigmoid", "logit_normal", "uniform", "shift", "flux_shift")
LR_SCHEDULES = ("constant", "cosine")
TARGETS = ("attention", "all-linear")
MEMORY_MODES = ("auto", "bf16", "fp8", "nf4", "fp32")
TRAIN_COMPILE_MODES = ("auto", "off", "blocks", "blocks-cudagraphs", "full")
# fp8 matmuls take a generation step to 0.67x of eager's on an H200 (0.89x of bf16 blocks
# compiled) and gain LoRA training nothing (bench/results/gpu.json, runs 9 and 11), so only
# generation offers them.
GENERATE_COMPILE_MODES = ("auto", "off", "blocks", "blocks-fp8", "blocks-fp8-cudagraphs", "full")
CHECKPOINTING_MODES = ("auto", "on", "off")
MODEL_HELP = (
    'a registry name (flux-dev, flux-schnell, flux-krea, klein-4b, klein-4b-base, klein-9b, '
    'klein-9b-base, or "demo" and "demo-klein", the built-in tiny FLUX.1 and FLUX.2 models), a '
    "local diffusers folder, or a Hugging Face repo id already in your local cache "
    "(black-forest-labs/FLUX.1-dev)"
)


# With no photo held out (train.validation_photos = 0), the validation loss is measured on
# this many training photos: 20 forward passes a checkpoint.
MEASURED_TRAINING_PHOTOS = 4


def _opt(help: str, **rules: Any) -> Any:
    """A schema field: its default comes from `default` or `default_factory` in rules."""
    kwargs: dict[str, Any] = {}
    if "default_factory" in rules:
        kwargs["default_factory"] = rules.pop("default_factory")
    else:
        kwargs["default"] = rules.pop("default")
    return field(metadata={"help": help, **rules}, **kwargs)


@dataclass(frozen=True)
class TrainSettings:
    resolution: list[int] = _opt(
        "Training resolutions in px (the long-side bucket area); several train at once.",
        default_factory=lambda: [512, 768, 1024],
        min=64,
        max=2048,
        multiple_of=64,
        min_items=1,
    )
    rank: int = _opt("LoRA rank: 16 suits a person; higher learns more detail and more noise.",
                     default=16, min=1, max=256)
    alpha: float = _opt("LoRA alpha; the update is scaled by alpha / rank.",
                        default=16.0, min=0.01, max=1024)
    learning_rate: float = _opt("Peak learning rate.", default=1e-4, min=1e-7, max=1e-1)
    steps: int = _opt("Training steps in all.", default=1500, min=1, max=MAX_STEPS)
    batch_size: int = _opt("Images per step.", default=1, min=1, max=64)
    optimizer: str = _opt("Optimizer: " + " | ".join(OPTIMIZERS) + " (prodigy sets its own "
                          "step size: learning_rate is not used with it).",
                          default="adamw", choices=OPTIMIZERS)
    seed: int = _opt("Random seed: the same seed and data give the same LoRA.",
                     default=42, min=0, max=2**32 - 1)
    timestep_sampling: str = _opt(
        "How training noise levels are drawn: sigmoid (of a standard normal; ai-toolkit, "
        "SimpleTuner) | logit_normal (the same with logit_mean / logit_std) | uniform | "
        "shift (kohya's: sigmoid, then a fixed shift of 3.1582) | flux_shift (kohya's: "
        "sigmoid, then Flux's resolution-dependent shift).",
        default="sigmoid", choices=TIMESTEP_SAMPLING)
    logit_mean: float = _opt("Mean of the normal behind logit_normal sampling.",
                             default=0.0, min=-5, max=5)
    logit_std: float = _opt("Spread of the normal behind logit_normal sampling.",
                            default=1.0, min=0.01, max=5)
    lr_schedule: str = _opt("Learning-rate schedule after warm-up: " + " | ".join(LR_SCHEDULES)
                            + ".", default="constant", choices=LR_SCHEDULES)
    warmup_steps: int = _opt("Steps of linear learning-rate warm-up.", default=0, min=0,
                             max=100_000)
    grad_accum: int = _opt("Gradient accumulation: batches per optimizer step.", default=1,
                           min=1, max=256)
    max_grad_norm: float = _opt("Clip gradients to this norm (0 turns clipping off).",
                                default=1.0, min=0, max=1000)
    caption_dropout: float = _opt("Share of steps trained with an empty caption.",
                                  default=0.0, min=0, max=1)
    targets: str = _opt("LoRA layers: attention (projections) | all-linear.",
                        default="attention", choices=TARGETS)
    dropout: float = _opt("LoRA dropout.", default=0.0, min=0, max=0.9)
    text_encoder_lora: bool = _opt("Also train a LoRA on the CLIP text encoder's attention "
                                   "(T5 stays frozen and cached, as kohya does).",
                                   default=False)
    preserve_class: str = _opt(
        "Keep the subject off everyone else (ai-toolkit's differential output preservation): "
        "the class your trigger word names (person, woman, man, dog). Each step also trains "
        "each caption with the trigger replaced by this word to give what the base model "
        "gives, so people who are not your subject keep their own faces; the samples gain the "
        "first prompt with the class, to watch it. A step takes ~2.3x as long (the model runs "
        "twice more: once without the LoRA). Empty: off.",
        default="", max_length=100)
    preserve_weight: float = _opt("How strongly preserve_class holds the class to the base "
                                  "model: the weight of its loss beside the training loss.",
                                  default=1.0, min=0.01, max=100)
    guidance: float = _opt("Guidance value fed to Flux-dev while training (1.0 recommended).",
                           default=1.0, min=0, max=20)
    memory: str = _opt("Precision and quantisation: auto (from the GPU's free memory; "
                       "float32 on a CPU) | bf16 (on a CPU too: faster where it has AMX or "
                       "AVX512-BF16, for models bigger than the demo) | fp8 (weights stored "
                       "in 8 bits) | nf4 (needs the lowvram extra) | fp32. `lorabooth plan` "
                       "shows what auto picks.", default="auto",
                       choices=MEMORY_MODES)
    compile: str = _opt("torch.compile for the transformer: auto (measured on this device: "
                        "the first run times its first steps eager, then the repeated blocks "
                        "compiled if the run is long enough to pay, and keeps the faster; "
                        "later runs decide from that; off over fp8 or NF4 weights) | blocks | "
                        "blocks-cudagraphs (the blocks replayed as CUDA graphs, so the host "
                        "launches a block, not each kernel: a 512 px FLUX.1-dev step on an "
                        "H100 in 0.154 s against 0.193, on an H200 0.114 s; CUDA without "
                        "checkpointing only) | "
                        "full | off. Compiled code is cached on disk, so later runs pay a "
                        "fraction of the first's compile.",
                        default="auto", choices=TRAIN_COMPILE_MODES)
    checkpointing: str = _opt("Gradient checkpointing (recompute activations in the backward "
                              "pass): auto (off where every activation fits beside bf16 "
                              "weights, a third less arithmetic per step; on otherwise) | on | "
                              "off. `lorabooth plan` shows what auto picks.",
                              default="auto", choices=CHECKPOINTING_MODES)
    ema_decay: float = _opt("Keep an exponential moving average of the LoRA and save it "
                            "(0: off; 0.999 is usual).", default=0.0, min=0, max=0.99999)
    auto_continue_after: int = _opt(
        "When this many new photos arrive, queue a continued training run (0: off).",
        default=0, min=0, max=100_000)
    checkpoint_every: int = _opt("Save a resumable checkpoint every N steps.",
                                 default=250, min=1, max=1_000_000)
    keep_checkpoints: int = _opt("How many recent checkpoints to keep on disk (and the "
                                 "promoted one, and the run's best by validation loss).",
                                 default=8, min=1, max=1000)
    validate: bool = _opt(
        "Measure each checkpoint (and the base model, before the first step) by the loss at "
        "fixed noise levels with fixed noise: the 'val' column and the dots on the loss "
        "curve. Training's own loss jumps ten-fold from step to step with the noise level it "
        "draws; this one moves only when the weights do, so checkpoints compare by it.",
        default=True)
    validation_photos: int = _opt(
        "Photos held out of training and measured instead (kohya's validation split, as a "
        "count): their loss falls while the LoRA learns the subject and turns up when it "
        f"starts to learn its own photos instead. 0: measured on {MEASURED_TRAINING_PHOTOS} "
        "of the training photos "
        "(a steady curve, which keeps falling as the LoRA memorises them).",
        default=0, min=0, max=64)

    @property
    def preserved(self) -> str:
        """The class preserve_class names, its words single-spaced ("" when off): what takes
        the trigger word's place in captions."""
        return " ".join(self.preserve_class.split())


@dataclass(frozen=True)
class SampleSettings:
    prompts: list[str] = _opt(
        "Prompts rendered at every sample step; {trigger} becomes the trigger word.",
        default_factory=lambda: [
            "photo of {trigger}, studio portrait, soft light",
            "{trigger} on a film poster, bold title text",
            "candid photo of {trigger} laughing in a busy cafe",
        ],
        min_items=0,
    )
    every: int = _opt("Render samples every N steps (0 turns samples off).",
                      default=250, min=0, max=1_000_000)
    before_training: bool = _opt("Also render them before the first step (step 0), so the "
                                 "contact sheet starts from what the base model draws.",
                                 default=True)
    steps: int = _opt("Denoising steps for each sample image.", default=20, min=1, max=200)
    seed: int = _opt("Seed of the sample images, the same at every step so they compare.",
                     default=1234, min=0, max=2**32 - 1)


@dataclass(frozen=True)
class GenerateSettings:
    width: int = _opt("Image width in px (a multiple of 16).", default=1024, min=64, max=4096,
                      multiple_of=16)
    height: int = _opt("Image height in px (a multiple of 16).", default=1024, min=64,
                       max=4096, multiple_of=16)
    steps: int = _opt("Denoising steps (Flux-dev: 28; Flux-schnell: 4).", default=28, min=1,
                      max=200)
    guidance: float = _opt("Guidance (Flux-dev: 3.5; schnell ignores it).", default=3.5, min=0,
                           max=30)
    lora_scale: float = _opt("Strength of the workspace's LoRA.", default=1.0, min=-4, max=4)
    model: str = _opt("The model images are made with, when not the one trained on (empty: "
                      "the workspace's model). klein: train on klein-4b-base, make images "
                      "with klein-4b in 4 steps.", default="")
    memory: str = _opt("Precision for generation: auto (bf16 with every model on the GPU if it "
                       "fits, else with T5 streamed from CPU memory, else model offload; then "
                       "the same in fp8, then nf4; float32 on a CPU) | bf16 | fp8 | nf4 | "
                       "fp32.", default="auto", choices=MEMORY_MODES)
    compile: str = _opt("torch.compile for generation: auto (as training measured it for "
                        "the model on this device; else the repeated blocks on a CUDA GPU) "
                        "| blocks | blocks-fp8 (the large layers' weights quantised to fp8 "
                        "once and multiplied in fp8 on Ada/Hopper cards: a 28-step 1024 px "
                        "image in 4.0 s on an H100, 0.63x eager's time, with 8 GiB less "
                        "resident; needs the fp8 extra) | blocks-fp8-cudagraphs (the same, "
                        "each block replayed as a CUDA graph: 2.97 s on an H200, where bf16 "
                        "blocks took 3.87) | off.",
                        default="auto", choices=GENERATE_COMPILE_MODES)
    step_cache: float = _opt(
        "First-block cache (FLUX.1 models): each denoising step runs the transformer's first "
        "block, and when its output changed less than this fraction since the last full step, "
        "the other blocks reuse that step's work. 0.05-0.12 makes images faster with small "
        "changes to them; 0 computes every step (training samples always do).",
        default=0.0, min=0, max=1)
    presets: dict[str, str] = _opt(
        "Named prompt templates: {prompt} is what you type, {trigger} the trigger word.",
        default_factory=lambda: {
            "portrait": "studio portrait photo of {trigger}, {prompt}, soft key light, 85mm",
            "poster": "film poster of {trigger}, {prompt}, bold title text, dramatic light",
            "product": "product shot of {trigger}, {prompt}, clean white background",
        })


@dataclass(frozen=True)
class Config:
    photos: str = _opt("Folder of your photos and their .txt captions (relative to this file).",
                       default="photos", non_empty=True)
    trigger: str = _opt("The word that names your subject in captions and prompts.",
                        default="ohwx", non_empty=True, no_spaces=True)
    model: str = _opt("Base model: " + MODEL_HELP + ".", default="black-forest-labs/FLUX.1-dev",
                      non_empty=True)
    train: TrainSettings = field(default_factory=TrainSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)

    def photos_dir(self, workspace: Path) -> Path:
        return (workspace / self.photos).expanduser().resolve()

    @property
    def image_model(self) -> str:
        """The model images are made with: `generate.model`, else the one trained on."""
        return self.generate.model or self.model


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


class ConfigError(LoraboothError):
    """One or more problems with a config; str() lists each on its own line."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[ConfigProblem], path: Path | None = None):
        self.problems = problems
        self.path = path
        where = str(path) if path else CONFIG_NAME
        lines = [f"{where}: {len(problems)} problem{'s' if len(problems) != 1 else ''}"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# validation


def _describe_type(tp: Any) -> str:
    if get_origin(tp) is dict:
        return "a table of strings"
    if get_origin(tp) is list:
        return f"a list of {_describe_type(get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[tp]


def _type_ok(value: Any, tp: Any) -> bool:
    if get_origin(tp) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in value.items())
    if get_origin(tp) is list:
        return isinstance(value, list) and all(_type_ok(v, get_args(tp)[0]) for v in value)
    if isinstance(value, bool):
        return tp is bool
    if tp is float:
        return isinstance(value, int | float)
    return isinstance(value, tp)


def _show(value: Any) -> str:
    import tomlkit

    return tomlkit.item(value).as_string() if value is not None else "nothing"


def _check_rules(key: str, value: Any, tp: Any, rules: dict[str, Any]) -> list[ConfigProblem]:
    if not _type_ok(value, tp):
        return [ConfigProblem(key, f"{_show(value)} is not {_describe_type(tp)}"
                              + _range_hint(rules))]
    if isinstance(value, dict):
        return []
    items = value if isinstance(value, list) else [value]
    problems = []
    if isinstance(value, list) and len(value) < rules.get("min_items", 0):
        problems.append(ConfigProblem(key, f"needs at least {rules['min_items']} value(s)"))
    for item in items:
        what = f"{_show(item)}" + (f" (in {_show(value)})" if isinstance(value, list) else "")
        if isinstance(item, float) and not math.isfinite(item):
            problems.append(ConfigProblem(key, f"{what} is not a finite number"
                                          + _range_hint(rules)))
            continue
        lo, hi = rules.get("min"), rules.get("max")
        if (lo is not None and item < lo) or (hi is not None and item > hi):
            problems.append(ConfigProblem(key, f"{what} is out of range; allowed: {lo} to {hi}"))
        if (m := rules.get("multiple_of")) and isinstance(item, int) and item % m:
            problems.append(ConfigProblem(key, f"{what} is not a multiple of {m}"))
        if (choices := rules.get("choices")) and item not in choices:
            problems.append(ConfigProblem(key, f"{what} is not one of: {', '.join(choices)}"))
        if rules.get("non_empty") and isinstance(item, str) and not item.strip():
            problems.append(ConfigProblem(key, "must not be empty"))
        if (n := rules.get("max_length")) and isinstance(item, str) and len(item) > n:
            problems.append(ConfigProblem(key, f"is {len(item)} characters long; at most {n}"))
        if rules.get("no_spaces") and isinstance(item, str) and any(c.isspace() for c in item):
            problems.append(ConfigProblem(key, f"{what} must be one word, without spaces"))
    return problems


def _range_hint(rules: dict[str, Any]) -> str:
    if "choices" in rules:
        return f"; allowed: {', '.join(rules['choices'])}"
    if "min" in rules and "max" in rules:
        return f"; allowed: {rules['min']} to {rules['max']}"
    return ""


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[ConfigProblem]) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = prefix + key
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            known = ", ".join(prefix + k for k in fields)
            problems.append(ConfigProblem(full, f"unknown key{hint} (known here: {known})"))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp, value, full = hints[name], data[name], prefix + name
        if dataclasses.is_dataclass(tp):
            if isinstance(value, dict):
                values[name] = _build(tp, value, full + ".", problems)
            else:
                problems.append(ConfigProblem(full,
                                              f"must be a table [{full}], not {_show(value)}"))
            continue
        found = _check_rules(full, value, tp, dict(f.metadata))
        problems.extend(found)
        if not found:
            values[name] = float(value) if tp is float else value
    return cls(**values)


def toml_mistake(text: str) -> str:
    """What is wrong with TOML text tomllib refused, in tomlkit's words, which name the key
    given twice ('Key "model" already exists') where tomllib says only where."""
    import tomlkit
    import tomlkit.exceptions

    try:
        tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:  # bad syntax, or a key given twice
        return str(exc)
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        return str(exc) or "nested too deeply"
    return "unreadable"


def parse_config(text: str, path: Path | None = None) -> Config:
    """Parse and validate config text; raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)  # a tenth of tomlkit's time, and no import of it at start
    except (tomllib.TOMLDecodeError, RecursionError):  # brackets nested past its recursion
        raise ConfigError([ConfigProblem("", f"not valid TOML: {toml_mistake(text)}")],
                          path) from None
    problems: list[ConfigProblem] = []
    config = _build(Config, data, "", problems)
    if not problems:
        problems += _check_preservation(config)
        problems += _check_model(config.model, path)
        if config.generate.model:
            problems += [ConfigProblem("generate.model", p.message)
                         for p in _check_model(config.generate.model, path)]
    if problems:
        raise ConfigError(problems, path)
    return config


def _check_preservation(config: Config) -> list[ConfigProblem]:
    """The class must name something other than the trigger word: a caption holding the class
    in its place would be trained both to change and to stay as the base model draws it."""
    word = config.train.preserved
    if not word and config.train.preserve_class:
        return [ConfigProblem("train.preserve_class", "is only spaces; leave it empty to turn "
                                                      "preservation off")]
    words = word.lower().replace(",", " ").replace(".", " ").split()
    if config.trigger.lower() in words or "{trigger}" in word or "[trigger]" in word:
        return [ConfigProblem("train.preserve_class",
                              f"{_show(config.train.preserve_class)} holds the trigger word; "
                              "name the class of your subject (person, woman, man, dog)")]
    return []


def _check_model(model: str, path: Path | None) -> list[ConfigProblem]:
    """A bare name must be one the registry knows (a typo is caught here, with the closest
    name, not after a 34 GB search of the cache); folders and repo ids are checked when the
    weights are looked for."""
    from .models.registry import known, looks_like_a_name, unknown

    here = path.parent if path is not None else Path.cwd()
    if not looks_like_a_name(model) or known(model) is not None or (here / model).exists() \
            or Path(model).exists():
        return []
    return [ConfigProblem("model", unknown(model))]


# Parsed configs by (path, mtime, size): a parse and its checks take ~1 ms, and the UI reads the
# file from several panes as it starts. A changed file has a new key and is parsed again.
_PARSED: dict[tuple[str, int, int, int], Config] = {}


def load_config(workspace: Path, *, check_photos: bool = True) -> Config:
    """Read `lorabooth.toml` from a workspace folder.

    With `check_photos`, a photos folder that does not exist is reported like any other
    problem, so one run of a command shows everything to fix.
    """
    path = workspace / CONFIG_NAME
    try:
        stat = path.stat()
        # The inode changes with every atomic rewrite, also where mtimes are coarse.
        key = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)
        config = _PARSED.get(key)
        if config is None:
            # utf-8-sig: a byte-order mark some editors write is not part of the TOML.
            config = parse_config(path.read_text(encoding="utf-8-sig"), path)
            _PARSED.clear()  # one entry: the UI and the engine read one workspace
            _PARSED[key] = config
    except FileNotFoundError:
        raise ConfigError([ConfigProblem("", f"no {CONFIG_NAME} here; create one with "
                                             f"`lorabooth init {workspace} --photos DIR`")],
                          path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"not UTF-8 text ({exc.reason} at byte "
                                             f"{exc.start})")], path) from None
    try:
        photos = config.photos_dir(workspace)
    except (RuntimeError, OSError) as exc:  # a symlink loop, say
        raise ConfigError([ConfigProblem(
            "photos", f"{_show(config.photos)}: cannot be followed ({exc})")], path) from None
    if check_photos:
        if not photos.is_dir():
            raise ConfigError([ConfigProblem(
                "photos", f"{_show(config.photos)}: folder {photos} does not exist; point "
                          "photos at the folder that holds your pictures")], path)
    return config


# ---------------------------------------------------------------------------------------------
# writing


def _schema_value(cls: type, dotted: str) -> tuple[Any, dict[str, Any]]:
    """The type and rules of a dotted key such as `train.rank`."""
    head, _, rest = dotted.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        raise ConfigError([ConfigProblem(dotted, "unknown key")])
    tp = get_type_hints(cls)[head]
    if rest:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError([ConfigProblem(dotted, "unknown key")])
        return _schema_value(tp, rest)
    return tp, dict(fields[head].metadata)


def set_config_value(workspace: Path, dotted: str, value: Any) -> Config:
    """Change one key in `lorabooth.toml`, keeping the user's comments and order."""
    return set_config_values(workspace, {dotted: value})


def set_config_values(workspace: Path, values: dict[str, Any]) -> Config:
    """Change several keys at once: every value is checked first, and on any problem nothing
    is written (ConfigError lists them all)."""
    import tomlkit
    import tomlkit.exceptions

    path = workspace / CONFIG_NAME
    problems: list[ConfigProblem] = []
    for dotted, value in values.items():
        try:
            tp, rules = _schema_value(Config, dotted)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_check_rules(dotted, value, tp, rules))
    if problems:
        raise ConfigError(problems, path)
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8-sig"))
    except tomlkit.exceptions.TOMLKitError as exc:  # the file is broken now: say so, write nothing
        raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}")], path) from None
    for dotted, value in values.items():
        table: Any = doc
        *parents, last = dotted.split(".")
        for part in parents:
            if part not in table:
                table[part] = tomlkit.table()
            table = table[part]
        table[last] = value
    text = tomlkit.dumps(doc)
    config = parse_config(text, path)
    atomic_write_text(path, text)
    return config


def render_config(photos: str, model: str, trigger: str) -> str:
    """A complete, commented `lorabooth.toml` with every key at its default."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("lorabooth workspace config. Every key is optional; shown here with"))
    doc.add(tomlkit.comment("its default. `lorabooth check` and the UI read this file."))
    doc.add(tomlkit.nl())
    overrides = {"photos": photos, "model": model, "trigger": trigger}
    _render_into(doc, Config, Config(**overrides))
    return tomlkit.dumps(doc)


def _render_into(container: Any, cls: type, instance: Any) -> None:
    import tomlkit

    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            table = tomlkit.table()
            _render_into(table, hints[f.name], value)
            container.add(tomlkit.nl())
            container.add(f.name, table)
            continue
        container.add(tomlkit.comment(f.metadata["help"]))
        if isinstance(value, dict):  # a sub-table, written after the plain keys
            table = tomlkit.table()
            for key, text in value.items():
                table.add(key, text)
            container.add(f.name, table)
            continue
        container.add(f.name, value)
