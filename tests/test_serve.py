"""`bigmodel serve`: the real server (`python -m bigmodel serve` in a subprocess, on a free port)
over the session's tiny L1 run (conftest's `tiny_run`), spoken to with a real HTTP client (requests).

Three servers: one with room in its queue (answers, errors, 20 concurrent requests, 400 idle and
stalled connections held against it), one whose queue holds one request (20 concurrent requests:
some 503s, every 200 right), and one that a second `serve` on its port must not start beside and
that a SIGINT right after "serving" must stop. All must stop cleanly on a signal. The queue's
batching, the shapes and the request checks are also tested as plain functions below.
"""

import collections
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from bigmodel.cli import main  # noqa: E402
from bigmodel.config import ConfigError  # noqa: E402
from bigmodel.inference.sampling import Sampling  # noqa: E402
from bigmodel.inference.serve_api import GenerateRequest, Invalid, check_request  # noqa: E402
from bigmodel.inference.serve_engine import Limits, batch_shape, power_of_two_at_least  # noqa: E402
from bigmodel.inference.serve_http import raise_open_file_limit  # noqa: E402
from bigmodel.inference.serve_queue import Job, take_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Small limits: small shapes to compile, and every cap reachable in a test.
LIMIT_FLAGS = ["--max_batch", "4", "--max_prompts", "4", "--max_tokens", "32", "--max_prompt_tokens", "48",
               "--max_prompt_bytes", "256", "--max_body_bytes", "4096"]
PROMPTS = [f"And the LORD said unto {name}" for name in
           ("Moses", "Aaron", "Abraham", "Noah", "Cain", "Jacob", "Joseph", "Samuel", "David", "Saul",
            "Elijah", "Jonah", "Gideon", "Joshua", "Isaac", "Adam", "Eve", "Lot", "Job", "Esau")]


# The shared server's connection guard, small enough that the abuse test reaches both its limits.
GUARD_FLAGS = ["--request_timeout_s", "4", "--keep_alive_s", "2", "--max_pending_connections", "300"]


def serve_argv(workdir, port: int, *flags) -> list[str]:
    return [sys.executable, "-m", "bigmodel", "serve", "--workdir", str(workdir), "--port", str(port), *LIMIT_FLAGS, *flags]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m bigmodel serve` in a subprocess; `stop(sig)` returns (exit code, its stderr)."""

    def __init__(self, workdir, log_path, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(serve_argv(workdir, self.port, *flags), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
        deadline = time.monotonic() + 300
        while " serving " not in self.log():  # it listens from the start; it answers once it says so
            assert self.process.poll() is None, self.log()
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"the server did not come up:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return Path(self.log_path).read_text()

    def generate(self, **body):
        return requests.post(f"{self.url}/generate", json=body, timeout=120)

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        return code, self.log()


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    running = Server(tiny_run, tmp_path_factory.mktemp("serve_log") / "server.log", "--max_queue", "32", *GUARD_FLAGS)
    yield running
    code, log = running.stop(signal.SIGTERM)
    assert code == 0 and "stopped by SIGTERM" in log, log[-3000:]


def cli_generate(capsys, workdir, *arguments) -> dict:
    assert main(["generate", "--workdir", str(workdir), *arguments, "--json"]) == 0
    return json.loads(capsys.readouterr().out.splitlines()[0])


# ----------------------------------------------------------------------------- the server


def test_a_request_gets_what_the_generate_command_gives(server, tiny_run, capsys):
    for settings in ({"temperature": 0}, {"temperature": 1.0, "seed": 7}):
        response = server.generate(prompt="Jesus wept", max_tokens=24, **settings)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.json()["compiled"] is False and response.json()["decode_tokens_per_s"] > 0  # warmed up at startup
        served = response.json()["completions"]
        flags = [f"--{name}={value}" for name, value in settings.items()]
        expected = cli_generate(capsys, tiny_run, "--prompt", "Jesus wept", "--max_tokens", "24", *flags)
        assert len(served) == 1 and len(served[0]["tokens"]) == 24
        assert {key: served[0][key] for key in ("text", "tokens", "finish_reason")} == \
               {key: expected[key] for key in ("text", "tokens", "finish_reason")}, settings


def test_a_stop_string_and_several_prompts(server):
    alone = [server.generate(prompt=prompt, max_tokens=20, temperature=0).json()["completions"][0] for prompt in PROMPTS[:3]]
    together = server.generate(prompts=PROMPTS[:3], max_tokens=20, temperature=0).json()["completions"]
    assert [item["prompt"] for item in together] == PROMPTS[:3]
    assert [item["tokens"] for item in together] == [item["tokens"] for item in alone]
    text = alone[0]["text"]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    answer = server.generate(prompt=PROMPTS[0], max_tokens=20, temperature=0, stop=stop).json()
    stopped = answer["completions"][0]
    assert stopped["finish_reason"] == "stop" and stopped["text"] == text[: text.index(stop)]
    assert answer["compiled"] is True and answer["decode_tokens_per_s"] is None  # a stop string is a new program


def test_health_and_info(server, tiny_run):
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok", "waiting": 0, "running": 0}
    info = requests.get(f"{server.url}/info", timeout=10).json()
    assert info["step"] == 8 and info["workdir"] == str(tiny_run)
    assert info["model"]["d_model"] == 32 and info["model"]["n_layers"] == 1 and info["params"] == 28_768
    assert info["tokenizer"] == {"kind": "bytes", "vocab_size": 256}
    assert info["limits"]["max_tokens"] == 32 and info["limits"]["max_prompt_tokens"] == 48 and info["limits"]["max_queue"] == 32


@pytest.mark.parametrize("body,field", [
    ({"prompt": 5}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "a", "prompts": ["b"]}, "prompt"),
    ({"prompts": []}, "prompts"),
    ({"prompts": ["a"] * 5}, "prompts"),
    ({"prompts": ["a", 3]}, "prompts.1"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 33}, "max_tokens"),
    ({"prompt": "a", "max_tokens": "8"}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 1.5}, "max_tokens"),
    ({"prompt": "a", "temperature": -1}, "temperature"),
    ({"prompt": "a", "temperature": "hot"}, "temperature"),
    ({"prompt": "a", "top_k": -1}, "top_k"),
    ({"prompt": "a", "top_k": 257}, "top_k"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ({"prompt": "a", "top_p": 1.5}, "top_p"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": "a", "seed": 2**32}, "seed"),
    ({"prompt": "a", "stop": ""}, "stop"),
    ({"prompt": "a", "stop": "x" * 257}, "stop"),
    ({"prompt": "a" * 257}, "prompt"),  # bytes over --max_prompt_bytes
    ({"prompt": "a" * 49}, "prompt"),  # tokens over --max_prompt_tokens
    ({"prompt": "a", "temprature": 0.5}, "temprature"),  # a misspelt field is not ignored
    ('{"prompt": "a", "temperature": NaN}', "temperature"),
    ('{"prompt": "a",', "body"),
])
def test_each_invalid_field_is_a_422_naming_it(server, body, field):
    data = body if isinstance(body, str) else json.dumps(body)
    response = requests.post(f"{server.url}/generate", data=data, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["errors"][0]["field"] == field and answer["error"].startswith(f"{field}: "), answer


def test_a_body_over_the_limit_is_a_413(server):
    big = json.dumps({"prompt": "a" * 5000})
    response = requests.post(f"{server.url}/generate", data=big, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413 and response.json()["errors"][0]["field"] == "body"
    chunked = requests.post(f"{server.url}/generate", data=iter([big[:3000].encode(), big[3000:].encode()]),
                            headers={"content-type": "application/json"}, timeout=30)  # no Content-Length
    assert chunked.status_code == 413
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200  # and the server goes on


def concurrently(server, bodies):
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: server.generate(**body), bodies))


def test_twenty_concurrent_requests_are_all_answered_right(server):
    bodies = [{"prompt": prompt, "max_tokens": 16, "temperature": 0} for prompt in PROMPTS]
    expected = [server.generate(**body).json()["completions"][0]["tokens"] for body in bodies]  # one at a time
    responses = concurrently(server, bodies)
    assert [response.status_code for response in responses] == [200] * 20
    assert [response.json()["completions"][0]["tokens"] for response in responses] == expected
    assert [response.json()["completions"][0]["prompt"] for response in responses] == PROMPTS


@pytest.mark.slow  # starts a second server
def test_a_full_queue_answers_503_and_every_200_is_right(server, tiny_run, tmp_path):
    bodies = [{"prompt": prompt, "max_tokens": 32, "temperature": 1.0, "seed": seed} for seed, prompt in enumerate(PROMPTS)]
    expected = [server.generate(**body).json()["completions"][0]["tokens"] for body in bodies]  # sampled: each runs alone
    tiny_queue = Server(tiny_run, tmp_path / "tiny_queue.log", "--max_queue", "1")
    try:
        responses = concurrently(tiny_queue, bodies)
    finally:
        code, log = tiny_queue.stop(signal.SIGINT)
    statuses = collections.Counter(response.status_code for response in responses)
    assert set(statuses) == {200, 503} and statuses[200] >= 1, statuses
    for response, tokens in zip(responses, expected):
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and "busy" in response.json()["error"]
        else:
            assert response.json()["completions"][0]["tokens"] == tokens
    assert code == 0 and "stopped by SIGINT" in log and log.count("POST /generate 503") == statuses[503], log[-3000:]


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_idle_and_stalled_connections_cannot_starve_the_server(server, load_tool):
    """200 connections that send nothing and 200 that send half their headers, held open: /health
    answers within 1 s and a completion comes back right. Past --max_pending_connections 300 the
    longest waiting are closed at once; the rest at --request_timeout_s 4."""
    abuse = load_tool("serve_abuse")  # the benchmark's own clients
    abuse.raise_open_files(2048)  # 400 sockets in this process (the server raises its own limit)
    body = {"prompt": PROMPTS[0], "max_tokens": 16, "temperature": 0}
    expected = server.generate(**body).json()["completions"][0]["tokens"]
    opened = time.monotonic()
    held = abuse.hold_connections("127.0.0.1", server.port, idle=200, stalled=200)
    try:
        assert wait_until(lambda: abuse.closed_by_server(held) >= 100, seconds=3)
        assert abuse.closed_by_server(held[:95]) == 95 and abuse.closed_by_server(held[105:]) == 0  # the oldest went
        for _ in range(10):
            seconds, status, answer = abuse.timed_get("127.0.0.1", server.port, "/health", timeout=5)
            assert status == 200 and json.loads(answer)["status"] == "ok" and seconds < 1.0, seconds
        response = server.generate(**body)
        assert response.status_code == 200 and response.json()["completions"][0]["tokens"] == expected
        assert wait_until(lambda: abuse.closed_by_server(held) == 400, seconds=4 + 5 - (time.monotonic() - opened))
    finally:
        for sock in held:
            sock.close()
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def port_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow  # starts a server of its own
def test_a_second_serve_on_the_port_fails_and_sigint_right_after_serving_stops_the_first(tiny_run, capsys):
    port, lines, signalled = free_port(), [], []
    process = subprocess.Popen(serve_argv(tiny_run, port), cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})

    def read_and_interrupt():
        for line in process.stderr:
            lines.append(line)
            if " serving " in line and not signalled:
                process.send_signal(signal.SIGINT)  # the moment the line is out
                signalled.append(time.monotonic())

    reader = threading.Thread(target=read_and_interrupt, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: port_accepts(port) or process.poll() is not None, seconds=120), "".join(lines)
        code, err = serve_exit(capsys, "--workdir", str(tiny_run), "--port", str(port))  # most likely still warming up
        assert code == 2 and err == f"error: port {port} on 127.0.0.1 is in use: pick another --port, or stop what holds it\n"
        code = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    log = "".join(lines)
    assert signalled and code == 0 and time.monotonic() - signalled[0] < 15, log
    assert log.rstrip().endswith("stopped by SIGINT"), log


# ----------------------------------------------------------------------------- bad flags


def serve_exit(capsys, *arguments):
    try:
        code = main(["serve", *arguments])
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    return code, capsys.readouterr().err


def test_bad_flags_are_one_error_line_and_exit_2(tiny_run, tmp_path, capsys):
    code, err = serve_exit(capsys)
    assert code == 2 and "--workdir" in err and len(err.strip().splitlines()) == 1
    code, err = serve_exit(capsys, "--workdir", str(tmp_path), "--port", "0")  # the port is bound before the run is read
    assert code == 2 and err.startswith("error: ") and "has no config.json" in err
    code, err = serve_exit(capsys, "--workdir", str(tiny_run), "--max_prompts", "9", "--max_batch", "8")
    assert code == 2 and "--max_prompts 9 is over --max_batch 8" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve_exit(capsys, "--workdir", str(tiny_run), "--port", str(port))
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the parts


class Bytes:
    name, vocab_size = "bytes", 256

    def encode(self, text):
        return list(text.encode())


LIMITS = Limits(max_tokens=32, default_max_tokens=32, max_prompt_tokens=48, max_prompt_bytes=256, max_prompts=4,
                max_body_bytes=4096, max_queue=2, max_batch=4)


def test_check_request_keeps_prompt_and_new_tokens_inside_max_seq_len():
    job = check_request(GenerateRequest(prompts=["abc", "de"], max_tokens=8, temperature=0), Bytes(), LIMITS, max_seq_len=12)
    assert job.encoded == [[97, 98, 99], [100, 101]] and job.max_tokens == 8 and job.sampling == Sampling(0, 0, 1.0)
    with pytest.raises(Invalid, match="prompts.0 is 3 tokens, and with max_tokens 10 it would pass the model's max_seq_len of 12: at most 9"):
        check_request(GenerateRequest(prompts=["abc", "de"], max_tokens=10), Bytes(), LIMITS, max_seq_len=12)
    assert check_request(GenerateRequest(prompt="abc"), Bytes(), LIMITS, max_seq_len=64).max_tokens == 32  # the default


def test_the_queue_batches_only_greedy_jobs_with_the_same_stop_within_max_rows():
    def job(n_prompts, temperature=0.0, stop=None):
        return Job(["p"] * n_prompts, [[1]] * n_prompts, 8, Sampling(temperature), 0, stop)

    jobs = [job(1), job(1, stop="."), job(2), job(1, temperature=1.0), job(2), job(1)]
    waiting = collections.deque(jobs)
    assert take_batch(waiting, max_rows=4) == [jobs[0], jobs[2], jobs[5]]  # jobs[4] would make 5 rows
    assert take_batch(waiting, max_rows=4) == [jobs[1]]
    assert take_batch(waiting, max_rows=4) == [jobs[3]]  # sampled: alone
    assert take_batch(waiting, max_rows=4) == [jobs[4]] and not waiting


def test_batches_run_as_a_few_padded_shapes():
    assert [power_of_two_at_least(n, 64, 500) for n in (1, 64, 65, 300, 500)] == [64, 64, 128, 500, 500]
    assert batch_shape([5], 10, LIMITS) == batch_shape([40], 32, LIMITS)  # one shape: 1 row, 48 slots, 32 tokens
    assert batch_shape([5, 7], 10, LIMITS).rows == 4 and batch_shape([5], 10, LIMITS).rows == 1


def test_the_open_file_limit_is_raised_to_what_the_connections_need_or_refused():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    try:
        assert raise_open_file_limit(soft, "these") == soft and resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(ConfigError, match=f"^these need about {hard + 1} open files, but this process may open {hard} "):
                raise_open_file_limit(hard + 1, "these")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
