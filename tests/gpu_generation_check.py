"""GPU check of the one generation path (needs CUDA, so not part of the test suite):

    python tests/gpu_generation_check.py

greedy answers match transformers' own generate, seeded sampling is reproducible and leaves the global CPU and
CUDA random states alone, and the monitor's sampling with its KL runs on CUDA, in float32 and bfloat16, with LoRA
through PEFT. Needs torch, transformers, peft, tokenizers and huggingface_hub only."""
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, ".")
from rubric_rft.llm.generation import generate  # noqa: E402
from rubric_rft.llm.weights import build_tiny_model  # noqa: E402
from rubric_rft.training.monitor.policy import reference_of, sample_policy  # noqa: E402

print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
folder = Path("/tmp/tiny")
build_tiny_model(folder)
tokenizer = AutoTokenizer.from_pretrained(folder)
prompts = [[{"role": "user", "content": f"How do I boil {i} eggs?"}] for i in range(7)]
for dtype in (torch.float32, torch.bfloat16):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).cuda().eval()
    with torch.no_grad():  # the old path's batches: padding left, one batch
        tokenizer.padding_side = "left"
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        direct = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    tokenizer.padding_side = "right"
    greedy = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=8)
    eos_cut = all(a == b or b.startswith(a) for a, b in zip(greedy.texts, direct, strict=True))
    cpu_state, cuda_state = torch.get_rng_state(), torch.cuda.get_rng_state()
    first = generate(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=3, batch_size=4)
    second = generate(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=3, batch_size=4)
    untouched = torch.equal(cpu_state, torch.get_rng_state()) and torch.equal(cuda_state, torch.cuda.get_rng_state())
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    started = time.perf_counter()
    samples = sample_policy(lora, tokenizer, prompts, samples_per_prompt=2, max_new_tokens=8, temperature=0.7,
                            seed=1, reference=reference_of(lora), batch_size=4)
    print(f"{dtype}: greedy==generate (up to EOS cut) {eos_cut}; "
          f"padding side restored {tokenizer.padding_side == 'right'}; "
          f"seeded sampling reproducible {first.texts == second.texts}; global RNG untouched {untouched}; "
          f"monitor samples {len(samples.texts)}, KL at start max {max(samples.kl):.2e}, "
          f"lengths {samples.lengths[:4]}, {time.perf_counter() - started:.2f} s", flush=True)
    assert eos_cut and first.texts == second.texts and untouched and max(samples.kl) < 1e-3
print("GPU CHECK OK")
