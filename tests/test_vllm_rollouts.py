"""GRPO rollouts through TRL's vLLM paths on the CPU (vllm-cpu): colocate mode end to end, server mode up to the
boundary that needs CUDA (weight sync over NCCL)."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from trl import GRPOConfig

from rubric_rft.training.rollouts import (
    RolloutSettingsError,
    WeightSyncError,
    _reload_weights,
    check_rollout_settings,
    keep_compile_cache_loadable,
    set_cpu_kv_cache_size,
    vllm_memory_errors_as_settings_errors,
)

ROOT = Path(__file__).resolve().parent.parent
# vLLM's own switch for running the model under dynamo + eager instead of compiling it with inductor (minutes).
VLLM_ENV = {"VLLM_CPU_CI_ENV": "1", "HF_HUB_OFFLINE": "1"}


def grpo_args(**overrides) -> GRPOConfig:
    settings = dict(output_dir="unused", use_cpu=True, bf16=False, report_to="none", use_vllm=True)
    return GRPOConfig(**{**settings, **overrides})


def test_server_mode_without_cuda_is_refused_naming_colocate():
    with pytest.raises(RolloutSettingsError, match="needs a CUDA GPU.*vllm_mode: colocate"):
        check_rollout_settings(grpo_args(vllm_mode="server"))


def test_colocate_and_plain_generate_pass_the_check():
    check_rollout_settings(grpo_args(vllm_mode="colocate"))
    check_rollout_settings(grpo_args(vllm_mode="server", use_vllm=False))


@pytest.mark.slow
def test_the_training_script_refuses_server_mode_on_cpu_with_a_message_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--config", str(ROOT / "configs" / "cpu_vllm.yaml"),
         "--vllm_mode", "server", "--output_dir", str(tmp_path / "run"), "--report_to", "none"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "error: use_vllm with vllm_mode: server needs a CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


def test_the_kv_cache_size_is_set_when_unset_and_the_environment_wins():
    environ = {}
    set_cpu_kv_cache_size(1, environ)
    assert environ == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    environ = {"VLLM_CPU_KVCACHE_SPACE": "3"}
    set_cpu_kv_cache_size(1, environ)
    assert environ == {"VLLM_CPU_KVCACHE_SPACE": "3"}
    environ = {"VLLM_CPU_KVCACHE_SPACE": ""}  # vLLM reads an empty value as unset
    set_cpu_kv_cache_size(2, environ)
    assert environ == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    environ = {}
    set_cpu_kv_cache_size(None, environ)
    assert environ == {}


def test_colocated_vllm_on_the_cpu_compiles_through_the_cache_a_second_run_loads():
    environ = {}
    keep_compile_cache_loadable(grpo_args(vllm_mode="colocate"), environ)
    assert environ == {"VLLM_USE_AOT_COMPILE": "0"}
    environ = {"VLLM_USE_AOT_COMPILE": "1"}  # the user's choice wins
    keep_compile_cache_loadable(grpo_args(vllm_mode="colocate"), environ)
    assert environ == {"VLLM_USE_AOT_COMPILE": "1"}
    for args in (grpo_args(vllm_mode="colocate", use_vllm=False), grpo_args(vllm_mode="server")):
        environ = {}
        keep_compile_cache_loadable(args, environ)
        assert environ == {}


@pytest.mark.parametrize("gib", [0, 1.5, "1"])
def test_a_kv_cache_size_vllm_cannot_read_is_refused(gib):
    with pytest.raises(RolloutSettingsError, match="vllm_cpu_kv_cache_gib must be a whole number of GiB"):
        set_cpu_kv_cache_size(gib, {})


# vLLM's CPU worker, without and with an explicit KV-cache size (vllm/v1/worker/cpu_worker.py).
SHARE_TOO_SMALL = (
    "Available memory on node 0 (8.69/10.46 GiB) on kv cache allocation is less than requested memory for kv "
    "(-0.49/1.05 GiB). Reduce CPU memory used by other processes."
)
EXPLICIT_TOO_LARGE = (
    "Available memory on node 0 (7.06/7.84 GiB) on kv cache allocation is less than requested memory for kv "
    "(4096.00 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other "
    "processes."
)


def test_vllm_memory_errors_become_settings_errors_naming_the_key_to_change(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    with pytest.raises(RolloutSettingsError, match=r"set vllm_cpu_kv_cache_gib.*8\.69/10\.46 GiB") as error:
        with vllm_memory_errors_as_settings_errors():
            raise ValueError(SHARE_TOO_SMALL)
    assert isinstance(error.value.__cause__, ValueError)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4096")
    with pytest.raises(RolloutSettingsError, match=r"VLLM_CPU_KVCACHE_SPACE=4096.*lower vllm_cpu_kv_cache_gib"):
        with vllm_memory_errors_as_settings_errors():
            raise ValueError(EXPLICIT_TOO_LARGE)
    with pytest.raises(ValueError, match="^something else$"):
        with vllm_memory_errors_as_settings_errors():
            raise ValueError("something else")


class TiedEngineModel(torch.nn.Module):
    """A stand-in for vLLM's CPU model after loading, with its tied LM head listed before the embedding: both keep
    their shared weight packed (vLLM packs embeddings and heads with `remove_weight=False`), while a linear layer
    keeps only its packed copy (an empty weight)."""

    def __init__(self):
        super().__init__()
        self.lm_head, self.embed_tokens, self.proj = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
        self.embed_tokens.weight = torch.nn.Parameter(torch.ones(4, 2), requires_grad=False)
        self.lm_head.weight = self.embed_tokens.weight
        self.proj.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        for module in (self.lm_head, self.embed_tokens, self.proj):
            module.cpu_linear = "packed at load"

    def load_weights(self, weights) -> set[str]:
        """Like vLLM's models: the names it loaded; a tied head is loaded through the embedding."""
        known = dict(self.named_parameters(remove_duplicate=False))
        return {name for name, _ in weights if name in known and name != "lm_head.weight"}


def fake_generation(model: torch.nn.Module, fed: list[str]):
    """A `VLLMGeneration` whose engine is `model` and whose policy yields the weights named `fed`."""

    def reload_weights(weights_iterator, is_checkpoint_format):
        model.load_weights(weights_iterator)  # vLLM's reload keeps the loaded names to itself (it logs the rest)

    runner = types.SimpleNamespace(get_model=lambda: model, reload_weights=reload_weights)
    engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(
        model_runner=runner)))
    llm = types.SimpleNamespace(llm_engine=engine, reset_prefix_cache=lambda: None)
    return types.SimpleNamespace(llm=llm, _iter_named_params=lambda: iter([(n, torch.zeros(1)) for n in fed]))


@pytest.fixture
def repacked(monkeypatch) -> list[torch.nn.Module]:
    """The modules packed again, in order, through a stand-in for vLLM's CPU packing function."""
    modules = []
    packing = types.ModuleType("vllm.model_executor.layers.utils")
    packing.dispatch_cpu_unquantized_gemm = lambda module, remove_weight: modules.append(module)
    monkeypatch.setitem(sys.modules, packing.__name__, packing)
    return modules


def test_every_packed_layer_that_keeps_its_weight_is_repacked_whatever_the_module_order(repacked):
    model = TiedEngineModel()
    _reload_weights(fake_generation(model, ["embed_tokens.weight", "proj.weight"]))
    assert {id(module) for module in repacked} == {id(model.lm_head), id(model.embed_tokens)}


def test_a_weight_the_reload_did_not_load_is_an_error_naming_it(repacked):
    with pytest.raises(WeightSyncError, match=r"did not load 1 of its weights.*: proj\.weight$"):
        _reload_weights(fake_generation(TiedEngineModel(), ["embed_tokens.weight"]))


def run_probe(model_path: str, tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "probe.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "colocate_probe.py"), model_path, str(out), *flags],
        cwd=ROOT, env={**os.environ, **VLLM_ENV}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("flags", [("--sync-failures",), ("--lora",)], ids=["full", "lora"])
def test_colocated_vllm_samples_from_the_trained_weights(tiny_model_path, tmp_path, flags):
    """With a 1 GiB KV cache, whatever this machine's NUMA node reports (with vllm_gpu_memory_utilization 0.1 of a
    node reporting 7.8 GiB vLLM stopped before the first step: the trainer already held more than that share)."""
    pytest.importorskip("vllm")
    report = run_probe(tiny_model_path, tmp_path, *flags)
    assert report["installed"]
    # The policy moved, and vLLM moved with it: its log-probs sit at the trained model's (bf16 rounding apart:
    # vLLM samples in bfloat16), far from the starting model's. Without the repacked tied LM head the gap to the
    # trained model was 0.10 nats for the full model.
    assert report["trained_vs_start"] > 0.02
    assert report["vllm_vs_trained"] < 0.01
    assert report["vllm_vs_start"] > 5 * report["vllm_vs_trained"]
    steps = [entry for entry in report["log_history"] if "sampling/sampling_logp_difference/mean" in entry]
    assert len(steps) == 3  # every step sampled from vLLM, and its samples scored like the policy's own
    assert all(entry["sampling/sampling_logp_difference/mean"] < 0.01 for entry in steps)
    if "sync_failures" in report:
        # A weight the policy did not send would have stayed as it was (vLLM only logs it); one vLLM does not know
        # already stops its loader.
        failures = report["sync_failures"]
        assert failures["missing"] == "WeightSyncError: vLLM's reload did not load 1 of its weights, so it would "\
            "keep sampling from their old values: model.embed_tokens.weight"
        assert failures["unknown"].startswith("ValueError: There is no module or parameter named 'layers.0.mlp.extra")


def run_train_script(tmp_path: Path, model_path: str, *flags: str) -> subprocess.CompletedProcess:
    """scripts/train_grpo.py on configs/cpu_vllm.yaml, its KV-cache size left to the config."""
    command = [
        sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--config", str(ROOT / "configs" / "cpu_vllm.yaml"),
        "--model_name_or_path", model_path, "--output_dir", str(tmp_path / "run"), "--report_to", "none",
        "--num_samples", "0", "--save_steps", "1", *flags,
    ]
    env = {name: value for name, value in os.environ.items() if name != "VLLM_CPU_KVCACHE_SPACE"}
    return subprocess.run(command, cwd=ROOT, env={**env, **VLLM_ENV}, capture_output=True, text=True, timeout=900)


def train_script(tmp_path: Path, smollm2_path: str, *flags: str) -> subprocess.CompletedProcess:
    result = run_train_script(tmp_path, smollm2_path, *flags)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
@pytest.mark.vllm
def test_a_kv_cache_larger_than_the_machine_has_is_an_error_naming_the_key_not_a_traceback(tiny_model_path, tmp_path):
    pytest.importorskip("vllm")
    result = run_train_script(tmp_path, tiny_model_path, "--vllm_cpu_kv_cache_gib", "4096")
    assert result.returncode == 1, result.stderr[-4000:]
    assert "error: vLLM could not allocate its KV cache" in result.stderr
    assert "VLLM_CPU_KVCACHE_SPACE=4096 GiB" in result.stderr and "lower vllm_cpu_kv_cache_gib" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.vllm
def test_cpu_vllm_config_trains_smollm2_with_lora_and_resumes(smollm2_path, tmp_path):
    pytest.importorskip("vllm")
    first = train_script(tmp_path, smollm2_path, "--max_steps", "1")
    # the engine is shut down before the process group ends, not by vLLM's finalizer at exit after it
    assert "Invalid process group" not in first.stderr and "Traceback" not in first.stderr
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert (checkpoint / "adapter_model.safetensors").exists()

    train_script(tmp_path, smollm2_path, "--max_steps", "2", "--resume_from_checkpoint", str(checkpoint))
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "reward" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]  # step 1 restored from the checkpoint, step 2 trained
    # Only vLLM rollouts log the gap between vLLM's sampling log-probs and the policy's; a 135M model sampled in
    # bfloat16 against a float32 policy differs by a few hundredths of a nat.
    assert all(entry["sampling/sampling_logp_difference/mean"] < 0.1 for entry in steps)
    assert 0.0 <= steps[-1]["reward"] <= 1.0


def trl_rollout_server_command(model_path: str, port: int) -> list[str]:
    """The rollout server exactly as the installed TRL builds it (`trl vllm-serve` → `vllm serve MODEL ...`), started
    through `vllm.entrypoints.openai.api_server`: the `vllm` command of the vllm-cpu build looks for a distribution
    named `vllm` and fails. Sized for a CPU: 10% of RAM, a 512-token context."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    settings = ScriptArguments(
        model=model_path, host="127.0.0.1", port=port, gpu_memory_utilization=0.1, max_model_len=512
    )
    trl_command = build_command(settings)
    after_model = trl_command[trl_command.index("serve") + 2 :]
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path, *after_model]


@pytest.mark.slow
@pytest.mark.vllm
def test_a_rollout_server_started_as_trl_documents_generates_on_cpu_up_to_the_weight_sync(tiny_model_path, tmp_path):
    pytest.importorskip("vllm")
    from trl.generation.vllm_client import VLLMClient

    from rubric_rft.llm.serving import free_port

    port = free_port()
    env = {**os.environ, **VLLM_ENV, "VLLM_SERVER_DEV_MODE": "1"}  # as `trl vllm-serve` sets it
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            trl_rollout_server_command(tiny_model_path, port), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = VLLMClient(base_url=f"http://127.0.0.1:{port}", connection_timeout=600)  # waits for /health
        output = client.generate(["How do I make tea?", "How do I boil an egg?"], n=2, max_tokens=8)
        assert len(output["completion_ids"]) == 4  # 2 prompts x 2 completions
        assert all(1 <= len(ids) <= 8 for ids in output["completion_ids"])
        assert [len(lp) for lp in output["logprobs"]] == [len(ids) for ids in output["completion_ids"]]
        assert client.get_server_info()["weight_transfer_config"] == {"backend": "nccl"}
        client.reset_prefix_cache()  # a dev-mode endpoint TRL calls after every weight update
        # The boundary: weights travel over NCCL, which needs CUDA (hence check_rollout_settings above).
        with pytest.raises(NotImplementedError, match="CUDA"):
            client.init_communicator(device="cpu")
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
