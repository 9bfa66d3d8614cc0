"""Start a real OpenAI-compatible judge server on a local model and wait until it answers.

On GPUs, users serve judges with `vllm serve MODEL --served-model-name NAME`. On a CPU machine the stand-in is
Hugging Face's own `transformers serve` (extra `transformers[serving]`), pinned to one model with continuous
batching; this module only starts it, never serves anything itself. Judge configs then point at it exactly as
at vLLM: `base_urls: [http://HOST:PORT/v1]`, `model: NAME`.

`transformers serve` answers only for the model string it was started with (a request naming any other model
gets a 400), and a model that is not on the hub is named by its folder path. To offer vLLM's
`--served-model-name`, the server runs in a work folder where NAME is a symbolic link to the model folder, so
`HuggingFaceTB/SmolLM2-135M-Instruct` names the offline copy just as it names the hub model on a vLLM server.

Continuous batching sizes its KV cache to 60-90% of the free memory of the device; on CPU that is system RAM
(14 GB resident for a 135M model here, so two servers, or one beside training, run out of memory). The cache is
therefore fixed: `kv_cache_blocks` blocks (the model's page size each) and `max_batch_tokens` per forward pass,
~2 GB resident for SmolLM2-135M with room for dozens of concurrent judge questions.

`GET /health` answers before the model has produced a token (the first chat request waits ~20 s on 2 cores
while generation warms up), so readiness means one real chat completion, not just a healthy status.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from rubric_rft.models import cache_dir, resolve_model

DEFAULT_JUDGE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
READY_POLL_S = 0.5
DEFAULT_KV_CACHE_BLOCKS = 64
DEFAULT_MAX_BATCH_TOKENS = 2048


class ServerNotReady(RuntimeError):
    """The judge server exited or did not answer a chat request in time."""


@dataclass(frozen=True)
class ServedJudge:
    """A judge server that answered: where it listens and the model name its requests must carry."""

    base_url: str
    model: str
    process: subprocess.Popen
    log_path: Path

    def judge_config(self, **options) -> dict:
        """The `judge:` mapping (backend `openai`) that grades with this server; `options` add or override fields."""
        return {"backend": "openai", "model": self.model, "base_urls": [self.base_url], **options}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


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


def start_judge_server(
    model: str = DEFAULT_JUDGE_MODEL,
    *,
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str = "cpu",
    continuous_batching: bool = True,
    kv_cache_blocks: int = DEFAULT_KV_CACHE_BLOCKS,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    workdir: str | Path | None = None,
    ready_timeout_s: float = 300.0,
) -> ServedJudge:
    """Start `transformers serve` on `model` (anything `resolve_model` finds offline) and wait until a chat
    request is answered. Its output goes to `workdir/server-PORT.log`; stop it with `stop_judge_server`."""
    name = served_model_name or model
    port = port or free_port(host)
    workdir = Path(workdir) if workdir else cache_dir() / "served"
    workdir.mkdir(parents=True, exist_ok=True)
    served_name_folder(name, resolve_model(model), workdir)
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(
                name,
                host=host,
                port=port,
                device=device,
                continuous_batching=continuous_batching,
                kv_cache_blocks=kv_cache_blocks,
                max_batch_tokens=max_batch_tokens,
            ),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the caller reaches the server only through us
        )
    served = ServedJudge(f"http://{host}:{port}/v1", name, process, log_path)
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
