"""A scripted OpenAI-compatible judge server for tests and benchmarks: known verdicts, latency, capacity, faults.

    with JudgeServer(latency_s=0.05, capacity=8) as server:
        server.base_url        # "http://127.0.0.1:PORT/v1"
        server.stats.requests  # counters, read live

    python -m rubric_rft.testing.judge_server --port 0 --latency 1.0 --capacity 256
        # prints its base URL on the first stdout line; GET /stats returns the counters as JSON

It reads this project's judge prompts (`read_question`) and answers them like a judge would: batched
`{"c1": "yes", ...}`, per-criterion `{"satisfied": "no"}`, a bare Yes/No for the yes/no variant,
`{"winner": "A"|"B"|"tie"}` for a pairwise comparison, or for a listwise group `{"r1": {"c1": "yes", ...}, ...}`
(`{"r1": "yes", ...}` for one criterion), recording the order the group was shown in (`stats.shown`).

Verdicts come from a policy, by default `default_policy`: a criterion is satisfied iff its first quoted
keyword ('word' or "word") occurs in the response (case-insensitively); a criterion without a quoted keyword
is satisfied iff the first byte of sha256(criterion text + "\\n" + response) is even. Criterion texts are
seen as the prompt shows them: one line, runs of whitespace collapsed to one space.

It also plays the proposer of `rubric_rft.rubricgen`: prompts that write or refine a rubric, or rewrite an answer
(`rubric_rft.testing.proposer.read_proposer_question`), are answered by `proposer`, by default `keyword_proposer`.
Other chat requests get a 400, or, when a `responder` is given, its answer to the messages (a chat model).

Pairwise winners come from `pair_policy`, by default `more_words_wins`: the response with more words
(`str.split`) wins and equal counts tie, whichever position it is shown in. `always_a` is a judge with pure
position bias (it answers "A" whatever it is shown), to check that asking both orders cancels such a bias.

`flavor` picks how the server answers what is not a judge question, as real servers differ (both checked
against the real servers in tests/test_served_judge.py): "vllm" (a request naming another model gets a 404 with
vLLM's error object, `{"error": {"message": "The model `X` does not exist.", "type": "NotFoundError", "param":
"model", "code": 404}}`; unknown request fields are ignored; `top_logprobs` above 20 is a 400; `GET /health`
answers 200 with an empty body; `GET /v1/models` lists the served name with `"owned_by": "vllm"` and its
`max_model_len`) or "transformers" (`transformers serve` pinned to one model: a request naming another model gets
a 400 whose reason is only in FastAPI's `{"detail": ...}`, unknown request fields a 422, `GET /health`
answers `{"status": "ok"}`, and `GET /v1/models`, which lists the Hugging Face hub cache rather than the served
model, a plain-text 500 as it does where there is no hub cache), so clients are tested against both.

A request with `logprobs` (vllm flavor) gets vLLM's `logprobs` object: one entry per answer word (as tokens),
each with its `bytes` and its `top_logprobs` candidates, the word itself first; for a Yes or No answer the first
entry puts 0.8 on the word given, 0.15 on the other and 0.05 on "Maybe" (`transformers serve` ignores
`logprobs`, so the transformers flavor never sends them). Choices carry vLLM's extra fields (`logprobs: null`
when none were asked for, `stop_reason`), which clients must ignore.

Latency is an `asyncio.sleep` per request, and at most `capacity` requests are processed at once (others wait),
like a vLLM judge with a bounded batch. Faults are injected by arrival order, each option taking the next requests
in turn: the first `hang_first_n` hang (until the client gives up), the next `fail_first_n` fail with `fail_status`
(and a `Retry-After: retry_after` header, when set), the next `malformed_first_n` get prose without JSON, the next
`truncated_first_n` get their JSON cut in half, the next `empty_first_n` get `content: null` and no `usage` (as
real servers sometimes answer). After those, each request fails with probability `fail_rate` (seeded RNG).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
except ImportError as missing:
    raise ImportError(f"the scripted judge server needs the serving extra ({missing.name} is not installed): "
                      "pip install 'rubric_rft[serving]'") from missing

from rubric_rft.testing.proposer import ProposerPolicy, ProposerQuestion, keyword_proposer, read_proposer_question

Policy = Callable[[str, str, str], bool]
Winner = Literal["A", "B", "tie"]
PairPolicy = Callable[[str, str, str], Winner]  # (prompt, response A, response B) -> winner
Shape = Literal["batched", "per_criterion", "yes_no", "pairwise", "listwise"]
Flavor = Literal["vllm", "transformers"]
Responder = Callable[[list[dict]], str]  # chat messages -> the answer of a chat model

DEFAULT_MODEL = "scripted-judge"
CONSTRAINT_FIELDS = ("response_format", "structured_outputs")  # structured outputs: recorded, not enforced
MALFORMED_ANSWER = "The response looks reasonable overall, and I would lean towards accepting it."
# The chat request fields `transformers serve` accepts (the rest get a 422); the OpenAI schema's, in short.
TRANSFORMERS_SERVE_FIELDS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "stream",
        "logprobs",
        "top_logprobs",
        "n",
        "response_format",
        "frequency_penalty",
        "presence_penalty",
        "user",
    }
)
VLLM_MAX_LOGPROBS = 20  # vLLM's default `--max-logprobs`: more top candidates are refused with a 400
VLLM_MAX_MODEL_LEN = 2048  # what `rubric-rft serve-judge` starts vLLM with
_STARTUP_TIMEOUT_S = 10.0
_DISCONNECT_POLL_S = 0.02


@dataclass(frozen=True)
class JudgeQuestion:
    """What a judge prompt asks: `criteria` holds (label, text) pairs; the label is "" for one-criterion shapes.

    A pairwise question has no criteria: `response` is response A and `response_b` response B. A listwise question
    shows `responses` (labelled r1, r2, ... in that order; `response` is empty) and one or several criteria.
    """

    shape: Shape
    prompt: str
    response: str
    criteria: list[tuple[str, str]]
    response_b: str = ""
    responses: tuple[str, ...] = ()


def read_question(messages: list[dict]) -> JudgeQuestion | None:
    """Recover the question from messages built by `rubric_rft.judges.prompts`; None if they are not ours."""
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    opening = re.search(r"<<<PROMPT-([0-9a-f]+)>>>\n", user) if isinstance(user, str) else None
    if opening is None:
        return None
    nonce = opening.group(1)
    prompt, rest = _between(user, f"<<<PROMPT-{nonce}>>>\n", f"\n<<<END-PROMPT-{nonce}>>>")
    first, after_first = _between(rest, f"<<<RESPONSE-A-{nonce}>>>\n", f"\n<<<END-RESPONSE-A-{nonce}>>>")
    if prompt is not None and first is not None:
        second, _ = _between(after_first, f"<<<RESPONSE-B-{nonce}>>>\n", f"\n<<<END-RESPONSE-B-{nonce}>>>")
        return None if second is None else JudgeQuestion("pairwise", prompt, first, [], second)
    if prompt is not None and f"<<<RESPONSE-r1-{nonce}>>>" in rest:
        return _listwise_question(prompt, rest, nonce)
    response, tail = _between(rest, f"<<<RESPONSE-{nonce}>>>\n", f"\n<<<END-RESPONSE-{nonce}>>>")
    if prompt is None or response is None:
        return None
    listed = re.findall(r"^- (c\d+): (.*)$", tail, re.M)
    if listed:
        return JudgeQuestion("batched", prompt, response, listed)
    single = re.search(r"^Criterion: (.*)$", tail, re.M)
    if single is None:
        return None
    shape: Shape = "yes_no" if tail.rstrip().endswith("Answer yes or no.") else "per_criterion"
    return JudgeQuestion(shape, prompt, response, [("", single.group(1))])


def _listwise_question(prompt: str, rest: str, nonce: str) -> JudgeQuestion | None:
    """A group of responses fenced r1, r2, ... and either a criteria list or one `Criterion:` line."""
    responses = []
    while True:
        label = f"r{len(responses) + 1}"
        response, after = _between(rest, f"<<<RESPONSE-{label}-{nonce}>>>\n", f"\n<<<END-RESPONSE-{label}-{nonce}>>>")
        if response is None:
            break
        responses.append(response)
        rest = after
    listed = re.findall(r"^- (c\d+): (.*)$", rest, re.M)
    single = re.search(r"^Criterion: (.*)$", rest, re.M)
    criteria = listed or ([("", single.group(1))] if single else [])
    return JudgeQuestion("listwise", prompt, "", criteria, responses=tuple(responses)) if criteria else None


def _between(text: str, opening: str, closing: str) -> tuple[str | None, str]:
    """The text between two markers and the text after the closing one."""
    start = text.find(opening)
    end = text.find(closing, start + len(opening)) if start != -1 else -1
    if end == -1:
        return None, text
    return text[start + len(opening) : end], text[end + len(closing) :]


def default_policy(prompt: str, response: str, criterion: str) -> bool:
    """See the module docstring: quoted keyword in the response, else sha256 parity."""
    keyword = re.search(r"(?<!\w)(['\"])(.+?)\1(?!\w)", criterion)
    if keyword:
        return keyword.group(2).lower() in response.lower()
    return hashlib.sha256(f"{criterion}\n{response}".encode()).digest()[0] % 2 == 0


def more_words_wins(prompt: str, response_a: str, response_b: str) -> Winner:
    """See the module docstring: more words wins, equal word counts tie."""
    a, b = len(response_a.split()), len(response_b.split())
    return "A" if a > b else "B" if b > a else "tie"


def always_a(prompt: str, response_a: str, response_b: str) -> Winner:
    """A judge with nothing but position bias: whichever response is shown first wins."""
    return "A"


PAIR_POLICIES: dict[str, PairPolicy] = {"more-words": more_words_wins, "always-a": always_a}


@dataclass
class ServerStats:
    """Live counters; `authorizations` holds the distinct Authorization headers seen (never served by /stats)."""

    requests: int = 0
    in_flight: int = 0
    max_concurrent: int = 0
    status_counts: Counter[int] = field(default_factory=Counter)
    authorizations: set[str] = field(default_factory=set)
    constraints: list[dict] = field(default_factory=list)  # each request's answer-form fields, where it had any
    shown: list[tuple[str, ...]] = field(default_factory=list)  # each listwise question's responses, in their order

    def as_json(self) -> dict:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_concurrent": self.max_concurrent,
            "status_counts": {str(status): n for status, n in sorted(self.status_counts.items())},
        }


@dataclass
class ServerScript:
    """How the server behaves; see the module docstring."""

    model: str = DEFAULT_MODEL
    flavor: Flavor = "vllm"
    latency_s: float = 0.0
    capacity: int = 1024
    policy: Policy = default_policy
    pair_policy: PairPolicy = more_words_wins
    proposer: ProposerPolicy = keyword_proposer
    responder: Responder | None = None
    fenced: bool = False
    hang_first_n: int = 0
    hang_s: float = 30.0
    fail_first_n: int = 0
    fail_status: int = 500
    retry_after: str | None = None  # the Retry-After header of scripted failures, as the server would send it
    malformed_first_n: int = 0
    truncated_first_n: int = 0
    empty_first_n: int = 0
    fail_rate: float = 0.0
    seed: int = 0


class _JudgeApp:
    """The request handlers; all state lives on the server's event loop thread."""

    def __init__(self, script: ServerScript, stats: ServerStats) -> None:
        self.script = script
        self.stats = stats
        self.capacity = asyncio.Semaphore(script.capacity)
        self.rng = random.Random(script.seed)

    def starlette(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/stats", self.stats_json, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        """vLLM lists the served name; `transformers serve` lists the Hugging Face hub cache, not the model it
        serves, and answers a plain-text 500 where there is no hub cache."""
        if self.script.flavor == "transformers":
            return PlainTextResponse("Internal Server Error", status_code=500)
        model = {"id": self.script.model, "object": "model", "created": 0, "owned_by": "vllm"}
        model.update(root=self.script.model, parent=None, max_model_len=VLLM_MAX_MODEL_LEN)
        return JSONResponse({"object": "list", "data": [model]})

    async def health(self, request: Request) -> Response:
        """vLLM answers 200 with an empty body, `transformers serve` with `{"status": "ok"}`."""
        if self.script.flavor == "transformers":
            return JSONResponse({"status": "ok"})
        return Response(status_code=200)

    async def stats_json(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats.as_json())

    async def chat_completions(self, request: Request) -> JSONResponse:
        number = self.stats.requests
        self.stats.requests += 1
        if "authorization" in request.headers:
            self.stats.authorizations.add(request.headers["authorization"])
        self.stats.in_flight += 1
        self.stats.max_concurrent = max(self.stats.max_concurrent, self.stats.in_flight)
        try:
            response = await self._respond(request, number)
        finally:
            self.stats.in_flight -= 1
        self.stats.status_counts[response.status_code] += 1
        return response

    async def _respond(self, request: Request, number: int) -> JSONResponse:
        script = self.script
        body = await request.json()
        constraint = {key: body[key] for key in CONSTRAINT_FIELDS if key in body}
        if constraint:
            self.stats.constraints.append(constraint)
        stage = number
        if stage < script.hang_first_n:
            await self._hang(request)
            return _error(504, "scripted hang")
        stage -= script.hang_first_n
        if stage < script.fail_first_n:
            failure = _error(script.fail_status, "scripted failure")
            if script.retry_after is not None:
                failure.headers["Retry-After"] = script.retry_after
            return failure
        stage -= script.fail_first_n
        scripted_answers = script.malformed_first_n + script.truncated_first_n + script.empty_first_n
        if stage >= scripted_answers and self.rng.random() < script.fail_rate:
            return _error(script.fail_status, "scripted random failure")
        refusal = self._refusal(body)
        if refusal is not None:
            return refusal
        messages = body.get("messages", [])
        question = read_question(messages) or read_proposer_question(messages)
        if question is None and script.responder is None:
            return _error(400, "scripted judge: the messages are not a judge prompt of rubric_rft.judges.prompts")
        async with self.capacity:
            await asyncio.sleep(script.latency_s)
        if question is None:
            content: str | None = script.responder(messages)
        elif isinstance(question, ProposerQuestion):
            content = script.proposer(question)
        else:
            content = self._answer(question)
        finish_reason = "stop"
        if stage < script.malformed_first_n:
            content = MALFORMED_ANSWER
        elif stage < script.malformed_first_n + script.truncated_first_n:
            content, finish_reason = content[: len(content) // 2], "length"
        elif stage < scripted_answers:
            content = None
        completion = _completion(script.model, body["messages"], content, finish_reason, number)
        if script.flavor == "vllm":
            wants_logprobs = body.get("logprobs") and content is not None
            completion["choices"][0].update(
                logprobs=_vllm_logprobs(content) if wants_logprobs else None, stop_reason=None
            )
        return JSONResponse(completion)

    def _refusal(self, body: dict) -> JSONResponse | None:
        """The error a real server of this flavor gives a request it will not serve, or None."""
        if self.script.flavor == "transformers":
            unexpected = set(body) - TRANSFORMERS_SERVE_FIELDS
            if unexpected:
                return JSONResponse({"detail": f"Unexpected fields in the request: {unexpected}"}, status_code=422)
            if body.get("model", self.script.model) != self.script.model:
                detail = f"Server is pinned to '{self.script.model}'; requested '{body['model']}'."
                return JSONResponse({"detail": detail}, status_code=400)
            return None
        if body.get("model") != self.script.model:
            return _vllm_error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.", "model")
        if body.get("logprobs") and (body.get("top_logprobs") or 0) > VLLM_MAX_LOGPROBS:
            message = (
                f"Requested sample logprobs of {body['top_logprobs']}, which is greater than max allowed: "
                f"{VLLM_MAX_LOGPROBS} (parameter=logprobs, value={body['top_logprobs']})"
            )
            return _vllm_error(400, "BadRequestError", message, "logprobs")
        return None

    async def _hang(self, request: Request) -> None:
        """Wait `hang_s`, or until the client gives up, so shutdown is never held up by a hung request."""
        deadline = time.monotonic() + self.script.hang_s
        while time.monotonic() < deadline and not await request.is_disconnected():
            await asyncio.sleep(_DISCONNECT_POLL_S)

    def _answer(self, question: JudgeQuestion) -> str:
        verdicts = {
            label: self.script.policy(question.prompt, question.response, text) for label, text in question.criteria
        }
        if question.shape == "yes_no":
            return "Yes" if verdicts[""] else "No"
        if question.shape == "listwise":
            self.stats.shown.append(question.responses)
            answer = json.dumps({f"r{i}": self._listwise_verdicts(question, response)
                                 for i, response in enumerate(question.responses, start=1)})
        elif question.shape == "pairwise":
            answer = json.dumps(
                {"winner": self.script.pair_policy(question.prompt, question.response, question.response_b)}
            )
        elif question.shape == "batched":
            answer = json.dumps({label: "yes" if ok else "no" for label, ok in verdicts.items()})
        else:
            answer = json.dumps({"satisfied": "yes" if verdicts[""] else "no"})
        if self.script.fenced:
            return f"Here is my assessment.\n```json\n{answer}\n```\nEach verdict follows the criterion's wording."
        return answer


    def _listwise_verdicts(self, question: JudgeQuestion, response: str) -> str | dict[str, str]:
        """One response's verdicts: an object by criterion label, or a bare word for a one-criterion question."""
        words = {label: "yes" if self.script.policy(question.prompt, response, text) else "no"
                 for label, text in question.criteria}
        return words[""] if "" in words else words


def _vllm_logprobs(content: str) -> dict:
    """vLLM's `logprobs` of an answer, its words standing for tokens: a Yes or No answer's first entry puts 0.8 on
    its word, 0.15 on the other and 0.05 on "Maybe"; every other entry puts all the mass on its word."""
    words = content.split() or [content]
    entries = []
    for position, word in enumerate(words):
        bare = word.strip(".,!").capitalize()
        if position == 0 and bare in ("Yes", "No"):
            top = [(word, 0.8), ("No" if bare == "Yes" else "Yes", 0.15), ("Maybe", 0.05)]
        else:
            top = [(word, 1.0)]
        candidates = [{"token": token, "logprob": math.log(p), "bytes": list(token.encode())} for token, p in top]
        entries.append({**candidates[0], "top_logprobs": candidates})
    return {"content": entries}


def _vllm_error(status: int, kind: str, message: str, param: str) -> JSONResponse:
    """An error as vLLM's server words it."""
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "scripted_error", "code": status}}, status_code=status)


def _completion(model: str, messages: list[dict], content: str | None, finish_reason: str, number: int) -> dict:
    """A chat completion; token counts are word counts, and a null answer comes without `usage`."""
    completion = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
    }
    if content is not None:
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
        answer_words = len(content.split())
        completion["usage"] = {
            "prompt_tokens": prompt_words,
            "completion_tokens": answer_words,
            "total_tokens": prompt_words + answer_words,
        }
    return completion


class JudgeServer:
    """The scripted server on a free port, served by uvicorn from a background thread while in `with`.

    Keyword options are `ServerScript`'s fields; counters are in `stats`.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **script_options) -> None:
        self.host = host
        self.port = port
        self.script = ServerScript(**script_options)
        self.stats = ServerStats()
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> JudgeServer:
        config = uvicorn.Config(
            _JudgeApp(self.script, self.stats).starlette(),
            host=self.host,
            port=self.port,
            http="auto",  # httptools when installed (the dev extra), else h11
            loop="auto",  # uvloop when installed
            lifespan="off",
            backlog=4096,
            limit_concurrency=None,
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="judge-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the judge server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}/v1"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible judge server (prints its base URL).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--flavor", choices=("vllm", "transformers"), default="vllm")
    parser.add_argument("--latency", dest="latency_s", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--pair-policy", choices=sorted(PAIR_POLICIES), default="more-words")
    parser.add_argument("--fenced", action="store_true")
    parser.add_argument("--hang-first-n", type=int, default=0)
    parser.add_argument("--hang-s", type=float, default=30.0)
    parser.add_argument("--fail-first-n", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--malformed-first-n", type=int, default=0)
    parser.add_argument("--truncated-first-n", type=int, default=0)
    parser.add_argument("--empty-first-n", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    options = vars(parser.parse_args(argv))
    options["pair_policy"] = PAIR_POLICIES[options["pair_policy"]]
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    with JudgeServer(**options) as server:
        print(server.base_url, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
