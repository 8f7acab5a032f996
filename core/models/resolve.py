"""Where Flux weights come from: the built-in tiny `demo` model, a local diffusers folder, or a
repo id already in the local Hugging Face cache. Nothing here downloads anything."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_path

from ..errors import EXIT_USAGE, LoraboothError
from .registry import (
    DEMO,
    DEMO_KLEIN,
    BaseModel,
    known,
    looks_like_a_name,
    model_of_folder,
    unknown,
)

# Bump when the demo model's configs or weights change, so old caches are rebuilt, not reused.
DEMO_VERSION = 3
DEMO_KLEIN_VERSION = 1
REQUIRED_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "text_encoder_2",
                  "tokenizer", "tokenizer_2", "scheduler")
# FLUX.2 has one text encoder (Qwen3).
REQUIRED_PARTS_FLUX2 = ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer",
                        "scheduler")


class ModelNotFound(LoraboothError):
    """The weights asked for are not on this machine. str() tells where we looked and how to
    get them; the CLI prints it and exits 2."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user wrote: "demo", a path or a repo id
    path: Path  # a diffusers folder on disk
    is_demo: bool = False

    @property
    def model(self) -> BaseModel:
        """The registry's entry, read from the weights' own configs (dev embeds guidance,
        schnell does not), so a renamed folder is still what it is; the name decides only
        when there is no config."""
        return model_of_folder(self.path, self.spec)

    @property
    def max_sequence_length(self) -> int:
        return self.model.text_length


def cache_root() -> Path:
    """lorabooth's own cache (the demo model); LORABOOTH_CACHE overrides it."""
    override = os.environ.get("LORABOOTH_CACHE")
    return Path(override).expanduser() if override else user_cache_path("lorabooth")


def demo_model_path(spec: str = DEMO) -> Path:
    if spec == DEMO_KLEIN:
        return cache_root() / "models" / f"klein-demo-v{DEMO_KLEIN_VERSION}"
    return cache_root() / "models" / f"flux-demo-v{DEMO_VERSION}"


def resolve_model(spec: str, *, build_demo: bool = True) -> ModelSource:
    """Turn the config's `model` value into a diffusers folder on disk, or raise ModelNotFound."""
    spec = spec.strip()
    if spec == DEMO:
        from .demo import ensure_demo_model

        path = ensure_demo_model() if build_demo else demo_model_path()
        return ModelSource(spec, path, is_demo=True)
    if spec == DEMO_KLEIN:
        from .demo_klein import ensure_demo_klein_model

        path = demo_model_path(spec)
        return ModelSource(spec, ensure_demo_klein_model(path) if build_demo else path,
                           is_demo=True)
    entry = known(spec)
    if entry is not None and entry.repo:
        return ModelSource(spec, _find_in_hf_cache(entry.repo))
    local = Path(spec).expanduser()
    if looks_like_a_name(spec) and not local.exists():
        raise ModelNotFound(unknown(spec))
    # "org/name" that is not a folder here is a Hugging Face repo id; anything else a path.
    if local.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return ModelSource(spec, _check_folder(local.resolve()))
    return ModelSource(spec, _find_in_hf_cache(spec))


def _check_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ModelNotFound(f"Model folder {path} does not exist.\n" + _download_help())
    index = path / "model_index.json"
    flux2 = index.is_file() and '"Flux2' in index.read_text(encoding="utf-8", errors="replace")
    parts = REQUIRED_PARTS_FLUX2 if flux2 else REQUIRED_PARTS
    missing = [part for part in parts if not (path / part).exists()]
    if missing:
        raise ModelNotFound(
            f"{path} is not a complete diffusers Flux folder: missing {', '.join(missing)}.\n"
            "A diffusers folder holds model_index.json and one sub-folder per component.\n"
            + _download_help())
    return path


def _find_in_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        raise ModelNotFound(
            f"Model weights for {repo_id} were not found on this machine.\n"
            f"Looked in the Hugging Face cache: {constants.HF_HUB_CACHE}\n"
            "(set HF_HOME or HF_HUB_CACHE if yours lives elsewhere).\n"
            + _download_help(repo_id)) from None
    return _check_folder(path)


def _download_help(repo_id: str = "black-forest-labs/FLUX.1-dev") -> str:
    return (
        "To get them: accept the licence on the model's Hugging Face page, then run\n"
        f"  hf auth login && hf download {repo_id}\n"
        'or set model = "/path/to/a/diffusers/folder" in lorabooth.toml.\n'
        'To try lorabooth without weights, use model = "demo".'
    )
