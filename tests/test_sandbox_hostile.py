"""Hostile tool programs, run through the real agent loop and the real sandbox with small limits.

Every program is one `<python>` call of a scripted trajectory; all of them run in a single
`continue_rollouts` (module fixture), as a training step would run them. Each must be
contained (its error kind is the expected violation, nothing outside its working directory
changed, the message to the model says what happened), this process must keep running, and
`sandbox_violations` (the trainer's per-step metric) must count every one by kind.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from juncture.agent import AgentLimits, continue_rollouts, new_trajectories
from juncture.config import AgentConfig, PythonToolConfig, SamplingConfig
from juncture.policy.base import Generation
from juncture.tasks import Task
from juncture.tools import SANDBOX_VIOLATIONS
from juncture.tools.python_sandbox import PythonTool
from juncture.train.rl import sandbox_violations

LIMITS = PythonToolConfig(timeout_s=3.0, cpu_time_s=1, memory_mb=160, max_open_files=32, max_files=20,
                          max_output_chars=400)
# CPU hogs run in a batch of their own with a generous wall clock, so that the CPU-time limit, not
# the wall clock, stops them however busy the machine is.
CPU_LIMITS = LIMITS.model_copy(update={"timeout_s": 20.0})
CPU_HOGS = ("infinite_loop", "cpu_spin_threads")

# name -> (program, expected error kind). RUN, CKPT, HOME, TMP are replaced by real paths: a
# run directory with a checkpoint, the user's home, and a writable scratch directory outside
# the sandbox holding victim.txt.
HOSTILE = {
    # network
    "socket": ("import socket\nsocket.socket()", "network"),
    "socket_caught": ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
                      "except Exception as e:\n    print('caught', type(e).__name__)", "network"),
    "urllib": ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)", "network"),
    "dns": ("import socket\nsocket.getaddrinfo('localhost', 80)", "network"),
    "udp": ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', 9))",
            "network"),
    # processes
    "fork": ("import os\nos.fork()", "process"),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", "process"),
    "subprocess": ("import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])", "process"),
    "os_system": ("import os\nos.system('touch TMP/pwned')", "process"),
    "execv": ("import os\nos.execv('/bin/sh', ['sh', '-c', 'touch TMP/pwned'])", "process"),
    "posix_spawn": ("import os\nos.posix_spawn('/bin/sh', ['sh'], {})", "process"),
    "multiprocessing": ("import multiprocessing\nmultiprocessing.Process(target=print).start()", "process"),
    "pty_fork": ("import pty\npty.fork()", "process"),
    "thread_bomb": ("import threading, time\nfor _ in range(100000):\n"
                    "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()", "process"),
    # memory, time, output
    "memory_one_shot": ("x = bytearray(4 * 1024**3)", "memory"),
    "memory_gradual": ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "memory"),
    "memory_mmap": ("import mmap\nm = mmap.mmap(-1, 2**34)", "memory"),
    "infinite_loop": ("while True:\n    pass", "cpu_limit"),
    "sleep_forever": ("import time\ntime.sleep(10**6)", "timeout"),
    "sleep_ignoring_sigterm": ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                               "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(1000)", "timeout"),
    "cpu_spin_threads": ("import threading, hashlib\ndef spin():\n    while True:\n"
                         "        hashlib.sha256(b'x' * 10**6).digest()\n"
                         "for _ in range(4):\n    threading.Thread(target=spin).start()\nspin()", "cpu_limit"),
    "giant_stdout": ("while True:\n    print('x' * 1000)", "output_limit"),
    "giant_stderr": ("import sys\nwhile True:\n    sys.stderr.write('y' * 1000)", "output_limit"),
    "one_huge_print": ("print('z' * 10**7)", "output_limit"),
    # files
    "write_outside": ("open('TMP/new.txt', 'w').write('x')", "filesystem"),
    "append_victim": ("open('TMP/victim.txt', 'a').write('x')", "filesystem"),
    "write_run_dir": ("open('RUN/metrics.jsonl', 'w').write('{}')", "filesystem"),
    "read_checkpoint": ("print(open('CKPT/state.json').read())", "filesystem"),
    "list_checkpoints": ("import os\nprint(os.listdir('RUN/checkpoints'))", "filesystem"),
    "rename_checkpoint": ("import os\nos.rename('CKPT/state.json', 'stolen.json')", "filesystem"),
    "rmtree_run_dir": ("import shutil\nshutil.rmtree('RUN')", "filesystem"),
    "read_home": ("import os\nprint(os.listdir('HOME'))", "filesystem"),
    "read_etc_passwd": ("print(open('/etc/passwd').read())", "filesystem"),
    "parent_environ": ("import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())", "filesystem"),
    "chdir_then_write": ("import os\nos.chdir('TMP')\nopen('new.txt', 'w')", "filesystem"),
    "chmod_outside": ("import os\nos.chmod('TMP/victim.txt', 0)", "filesystem"),
    "symlink_escape": ("import os\nos.symlink('/etc', 'etc')\nprint(open('etc/passwd').read())", "filesystem"),
    "relative_symlink_escape": ("import os\nos.symlink('../../../..', 'up')\nprint(os.listdir('up'))",
                                "filesystem"),
    "hardlink_victim": ("import os\nos.link('TMP/victim.txt', 'mine')\nopen('mine', 'a').write('x')", "filesystem"),
    "dir_fd_escape": ("import os\nfd = os.open('/usr', os.O_RDONLY)\n"
                      "os.open('evil', os.O_CREAT | os.O_WRONLY, dir_fd=fd)", "filesystem"),
    "huge_file": ("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)", "file_size"),
    "many_files": ("for i in range(10**6):\n    open(f'f{i}', 'w').write('x' * 1000)", "disk"),
    "fd_exhaustion": ("fs = [open('/dev/null') for _ in range(100000)]", "open_files"),
    # signals, limits, escapes
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "signal"),
    "killpg_parent": ("import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)", "signal"),
    "raise_rlimit": ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "rlimit"),
    "raise_rlimit_caught_then_allocate": ("import resource\ntry:\n"
                                          "    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
                                          "except PermissionError:\n    pass\nx = bytearray(2 * 1024**3)", "memory"),
    "ctypes_fork": ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nif libc.fork() < 0:\n"
                    "    raise OSError(ctypes.get_errno(), 'fork')", "import"),
    "ctypes_kill_parent": ("import importlib, os\nctypes = importlib.import_module('ctypes')\n"
                           "libc = ctypes.CDLL(None, use_errno=True)\nif libc.kill(os.getppid(), 9):\n"
                           "    raise OSError(ctypes.get_errno(), 'kill')", "import"),
    "posixsubprocess": ("import os, _posixsubprocess as p\nr, w = os.pipe()\n"
                        "p.fork_exec([b'/bin/sh', b'-c', b'touch TMP/pwned'], [b'/bin/sh'], True, (w,), None, None,\n"
                        "            -1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1, None, False)",
                        "process"),
    "renice_parent": ("import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)", "forbidden"),
    "pin_parent": ("import os\nos.sched_setaffinity(os.getppid(), {0})", "forbidden"),
    "close_status_channel": ("import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n"
                             "    except OSError:\n        pass\nimport socket\nsocket.socket()", "tamper"),
    "gc_hook_hunt": ("import gc\nprint(len(gc.get_objects()))", "tamper"),
    # C-level recursion overflowing a small thread stack: a SIGSEGV within milliseconds. (On the main
    # thread's stack the same repr could instead run into the 1 s CPU limit first: a flaky race.)
    "c_recursion": ("import sys, threading\nsys.setrecursionlimit(10**7)\nthreading.stack_size(1 << 18)\nx = []\n"
                    "for _ in range(10**5):\n    x = [x]\nt = threading.Thread(target=repr, args=(x,))\nt.start()\n"
                    "t.join()", "crash"),
}
# Under Landlock + seccomp, ctypes and _posixsubprocess may be imported (sympy needs ctypes): what
# the code does with them is then refused by the kernel.
KERNEL_KINDS = {"ctypes_fork": "forbidden", "ctypes_kill_parent": "forbidden", "posixsubprocess": "forbidden"}
# No audit event covers these: only seccomp stops them.
NEEDS_KERNEL = {"renice_parent", "pin_parent"}


def expected_kind(name: str, kernel: bool) -> str:
    return KERNEL_KINDS.get(name, HOSTILE[name][1]) if kernel else HOSTILE[name][1]


# Contained without being a violation: the sandbox shows nothing worth stealing.
HARMLESS = {
    "environment_snooping": "import os\nprint(sorted(os.environ))",
    "home_is_the_sandbox": "import os\nprint(os.path.expanduser('~') == os.getcwd())",
    "python_recursion": "def f():\n    return f()\nf()",
}


class PerTaskPolicy:
    """Turn 0 of the trajectory for task `name` calls the program, turn 1 answers."""

    def __init__(self, tokenizer, programs: dict[str, str]):
        self.tokenizer = self.tok = tokenizer
        self.programs = programs

    def generate(self, prompts, max_new_tokens, params, generator=None):
        out = []
        for ids in prompts:
            text = self.tok.decode(ids)
            name = next(n for n in self.programs if f"hostile:{n}<|im_end|>" in text)
            response = text.split(f"hostile:{name}<|im_end|>")[1]
            turn = f"<python>{self.programs[name]}</python>" if "<result>" not in response else "<answer>done</answer>"
            tokens = self.tok.encode(turn, add_special_tokens=False)
            stop = next((s for s in params.stop_strings if turn.endswith(s)), None)
            out.append(Generation(tokens, [-1.0] * len(tokens), [0.5] * len(tokens), "stop", stop))
        return out


@pytest.fixture(scope="module")
def victims(tmp_path_factory):
    base = tmp_path_factory.mktemp("victims")
    run = base / "run"
    ckpt = run / "checkpoints" / "step_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text('{"step": 1}')
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    scratch = base / "scratch"
    scratch.mkdir()
    (scratch / "victim.txt").write_text("keep")
    return {"RUN": run, "CKPT": ckpt, "TMP": scratch, "HOME": Path.home()}


def _fill(code: str, paths: dict) -> str:
    for key, path in paths.items():
        code = code.replace(key, str(path))
    return code


@pytest.fixture(scope="module")
def outcome(tokenizer, victims):
    """Run every program as one batch of trajectories; return ({name: ToolCall}, trajectories, seconds)."""
    probe = PythonTool(LIMITS)
    probe("pass")
    kernel = set(probe.last_layers) == {"landlock", "seccomp"}
    programs = {name: _fill(code, victims) for name, (code, _) in HOSTILE.items() if kernel or name not in NEEDS_KERNEL}
    programs |= {name: _fill(code, victims) for name, code in HARMLESS.items()}
    before = {p: p.read_bytes() for p in victims["RUN"].rglob("*") if p.is_file()}
    agent = AgentConfig(prompt="plain", tools=["python"], max_turns=3, max_tool_calls=1, max_new_tokens=1000,
                        max_turn_tokens=500, max_tool_result_tokens=256)
    policy = PerTaskPolicy(tokenizer, programs)
    start = time.monotonic()
    trajs = []
    for limits, names in ((LIMITS, [n for n in programs if n not in CPU_HOGS]), (CPU_LIMITS, CPU_HOGS)):
        tasks = [Task(id=n, question=f"hostile:{n}", answer="done", verifier="exact_match") for n in names]
        batch = new_trajectories(tokenizer, tasks, 1, agent)
        continue_rollouts(policy, batch, {"python": PythonTool(limits)}, AgentLimits.from_config(agent),
                          SamplingConfig())
        trajs += batch
    seconds = time.monotonic() - start
    assert all(len(t.tool_calls) == 1 for t in trajs), [(t.task_id, t.finish_reason) for t in trajs if not t.tool_calls]
    calls = {t.task_id: t.tool_calls[0] for t in trajs}
    after = {p: p.read_bytes() for p in victims["RUN"].rglob("*") if p.is_file()}
    return calls, trajs, seconds, before == after, kernel


def test_at_least_thirty_hostile_programs():
    assert len(HOSTILE) >= 30
    assert {kind for _, kind in HOSTILE.values()} <= set(SANDBOX_VIOLATIONS)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained_and_named(outcome, victims, name):
    calls, _, _, _, kernel = outcome
    if name in NEEDS_KERNEL and not kernel:
        pytest.skip("not contained without seccomp: see docs/threat_model.md")
    call = calls[name]
    expected = expected_kind(name, kernel)
    assert (call.ok, call.error) == (False, expected), call.output
    assert "error" in call.output.lower() or "Error" in call.output, call.output
    if expected in ("network", "process", "signal", "filesystem", "rlimit", "import", "tamper", "disk"):
        assert "sandbox:" in call.output and "not allowed" in call.output, call.output


def test_nothing_outside_the_sandbox_changed(outcome, victims):
    _, _, _, run_dir_unchanged, _ = outcome
    assert run_dir_unchanged
    scratch = victims["TMP"]
    assert sorted(p.name for p in scratch.iterdir()) == ["victim.txt"]
    assert (scratch / "victim.txt").read_text() == "keep"
    assert (scratch / "victim.txt").stat().st_mode & 0o777 != 0


def test_the_caller_keeps_running_and_the_tool_still_works(outcome):
    calls, trajs, seconds, _, _ = outcome
    assert all(t.finish_reason == "answer" for t in trajs)  # every trajectory went on after its call
    assert PythonTool(LIMITS)("print(6 * 7)").output == "42"
    assert os.getpid() > 0  # (we are alive: kill_parent targeted this process)
    assert seconds < 60


def test_caught_violation_is_still_reported_to_the_model(outcome):
    call = outcome[0]["socket_caught"]
    assert call.output.startswith("caught PermissionError")
    assert "sandbox: network access" in call.output


def test_harmless_programs_leak_nothing(outcome, monkeypatch):
    calls = outcome[0]
    env = calls["environment_snooping"].output
    assert "HOME" in env and "JUNCTURE" not in env and "PYTHONPATH" not in env and "HF_HUB_OFFLINE" not in env
    assert calls["home_is_the_sandbox"].output == "True"
    assert calls["python_recursion"].error == "exception" and "RecursionError" in calls["python_recursion"].output
    assert all(calls[n].error not in SANDBOX_VIOLATIONS for n in HARMLESS)


def test_trainer_metric_counts_every_violation_by_kind(outcome):
    _, trajs, _, _, kernel = outcome
    metrics = sandbox_violations(trajs)
    names = [n for n in HOSTILE if kernel or n not in NEEDS_KERNEL]
    expected = Counter(expected_kind(n, kernel) for n in names)
    assert metrics["sandbox/violations"] == len(names)
    assert {k.removeprefix("sandbox/violation/"): v for k, v in metrics.items() if k != "sandbox/violations"} \
        == dict(expected)


def test_branch_does_not_recount_inherited_calls(outcome):
    _, trajs, _, _, _ = outcome
    parent = next(t for t in trajs if t.task_id == "fork")
    call = parent.tool_calls[0]
    before = parent.branch(call.result_end, "b-after")  # fork after the call: inherits it
    assert len(before.tool_calls) == 1
    assert sandbox_violations([before])["sandbox/violations"] == 0
    assert sandbox_violations([parent, before])["sandbox/violation/process"] == 1


def _layers() -> tuple[str, ...]:
    tool = PythonTool(LIMITS)
    tool("pass")
    return tool.last_layers


BYPASS = (  # make the audit hook's path check believe every path is inside the working directory
    "import os, posixpath\nposixpath._joinrealpath = lambda *a: (os.getcwd() + '/x', True)\n"
    "print(open('CKPT/state.json').read())"
)


def test_kernel_layers_hold_when_the_audit_hook_is_fooled(victims):
    if "landlock" not in _layers():
        pytest.skip("Landlock is not available on this kernel: the audit hook is the only file policy")
    r = PythonTool(LIMITS)(_fill(BYPASS, victims))
    assert (r.ok, r.error) == (False, "forbidden"), r.output
    assert "Permission denied" in r.output and '"step"' not in r.output


# Kernel layers alone: stage 1 confines the process, then runs `code` instead of the audited stage 2.
# Each program prints the errno its attack got: 1 = EPERM (seccomp, Landlock scopes), 13 = EACCES (Landlock).
KERNEL_ONLY = {
    "fork": ("import os\ntry:\n    os.fork()\nexcept OSError as e:\n    print(e.errno)", "1"),
    "socket": ("import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n    print(e.errno)", "1"),
    "kill_parent": ("import os\ntry:\n    os.kill(os.getppid(), 0)\nexcept OSError as e:\n    print(e.errno)", "1"),
    "raise_rlimit": ("import resource as r\nh = r.getrlimit(r.RLIMIT_NOFILE)[1]\ntry:\n"
                     "    r.setrlimit(r.RLIMIT_NOFILE, (h + 1, h + 1))\nexcept (OSError, ValueError) as e:\n"
                     "    print(getattr(e, 'errno', 1))", "1"),
    "chmod_outside": ("import os\ntry:\n    os.chmod('TMP/victim.txt', 0)\nexcept OSError as e:\n    print(e.errno)",
                      "1"),
    "read_checkpoint": ("try:\n    open('CKPT/state.json')\nexcept OSError as e:\n    print(e.errno)", "13"),
    "write_run_dir": ("try:\n    open('RUN/x', 'w')\nexcept OSError as e:\n    print(e.errno)", "13"),
    "list_home": ("import os\ntry:\n    os.listdir('HOME')\nexcept OSError as e:\n    print(e.errno)", "13"),
    "exec_shell": ("import os\ntry:\n    os.execv('/bin/sh', ['sh', '-c', 'touch TMP/pwned'])\n"
                   "except OSError as e:\n    print(e.errno)", "13"),
}


@pytest.mark.parametrize("name", sorted(KERNEL_ONLY))
def test_kernel_layers_alone_refuse(victims, tmp_path, name):
    if set(_layers()) != {"landlock", "seccomp"}:
        pytest.skip(f"kernel layers here: {_layers()}")
    import json
    import subprocess
    import sys

    from juncture.tools import python_sandbox as sb

    work = tmp_path / "work"
    work.mkdir()
    status_r, status_w = os.pipe()
    tool = PythonTool(LIMITS)
    spec = json.dumps(tool._spec(str(work), status_w, "require"))
    code = _fill(KERNEL_ONLY[name][0], victims)
    proc = subprocess.run([sys.executable, *sb._STAGE1, "-c", sb._script("_sandbox_confine.py"), spec, code],
                          pass_fds=(status_w,), capture_output=True, text=True, cwd=work, timeout=30,
                          env=sb._child_env(str(work)))
    os.close(status_w)
    os.close(status_r)
    assert proc.stdout.strip() == KERNEL_ONLY[name][1], proc.stdout + proc.stderr
    assert not (victims["TMP"] / "pwned").exists() and (victims["TMP"] / "victim.txt").stat().st_mode & 0o777


@pytest.mark.parametrize("name", ["socket", "fork", "kill_parent", "write_run_dir", "read_checkpoint", "ctypes_fork",
                                  "memory_one_shot", "giant_stdout", "many_files", "symlink_escape"])
def test_without_kernel_layers_the_audit_hook_still_contains(victims, name):
    code, kind = HOSTILE[name]
    r = PythonTool(LIMITS.model_copy(update={"kernel_isolation": "off"}))(_fill(code, victims))
    assert (r.ok, r.error) == (False, kind), r.output


def test_require_mode_reports_setup_failure_clearly(monkeypatch):
    from juncture.tools import python_sandbox

    iso = python_sandbox.isolation()
    monkeypatch.setattr(python_sandbox, "isolation", lambda: iso.__class__(**{**iso.__dict__, "site": ()}))
    monkeypatch.setattr(python_sandbox, "_STAGE1", ("-I", "-S", "-B"))
    r = PythonTool(LIMITS.model_copy(update={"kernel_isolation": "require"}))("print(1)")
    if r.ok:  # the kernel-interface packages were importable from the stdlib path anyway
        pytest.skip("cannot hide landlockpy/pyseccomp here")
    assert r.error == "crash" and "sandbox setup failed: kernel isolation unavailable" in r.output


def test_training_survives_hostile_calls_and_logs_them(tiny_model_dir, tmp_path, monkeypatch):
    """Real Trainer steps whose rollouts attack the trainer itself: its checkpoints, then its process."""
    from juncture.config import load_config
    from juncture.policy.hf import HFPolicy
    from juncture.tasks import build_tasks
    from juncture.train.metrics import read_metrics
    from juncture.train.rl import Trainer

    run = tmp_path / "run"
    cfg = load_config(None, [
        "algorithm.branching=none", "algorithm.credit=grpo", "algorithm.n_initial=null", "algorithm.group_size=2",
        f"run_dir={run}", f"model.path={tiny_model_dir}", "model.dtype=float32", "task.name=toy:even_tokens",
        "task.train_size=8", "task.eval_size=2", "agent.tools=[python]", "agent.prompt=plain",
        "agent.max_new_tokens=200", "agent.max_turn_tokens=120", "train.prompts_per_step=2",
        "train.micro_batch_size=4", "sft.enabled=false", "logging.progress=false",
    ])
    policy = HFPolicy.load(cfg.model)
    train_tasks, _ = build_tasks(cfg.task)
    trainer = Trainer(cfg, policy, {"python": PythonTool(LIMITS)}, train_tasks, run)
    trainer.save(0)
    state = trainer.ckpt_dir / "step_000000" / "state.json"
    attacks = [f"open({str(state)!r}, 'w').write('{{}}')", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"]
    tok = policy.tokenizer

    def scripted(prompts, max_new_tokens, params, generator=None):
        out = []
        for ids in prompts:
            response = tok.decode(ids).rsplit("<|im_start|>assistant", 1)[1]
            turn = "<answer>1</answer>" if "<result>" in response else f"<python>{attacks[step]}</python>"
            tokens = tok.encode(turn, add_special_tokens=False)
            out.append(Generation(tokens, [-1.0] * len(tokens), [0.5] * len(tokens), "stop",
                                  next(s for s in params.stop_strings if turn.endswith(s))))
        return out

    monkeypatch.setattr(policy, "generate", scripted)
    before = state.read_text()
    for step in range(2):
        metrics = trainer.train_step(step)
        trainer.metrics.log(step + 1, metrics)
    logged = read_metrics(run / "metrics.jsonl")
    assert [m["sandbox/violations"] for m in logged] == [4, 4]  # 2 prompts x 2 rows, one attack each
    assert logged[0]["sandbox/violation/filesystem"] == 4 and logged[1]["sandbox/violation/signal"] == 4
    assert state.read_text() == before
    assert logged[1]["train/rows"] == 4  # the update ran on the attacked rollouts too


def test_auto_falls_back_when_the_kernel_layers_break_the_interpreter(monkeypatch, caplog):
    """As on a machine whose Python needs files outside the readable roots (say, a Nix store)."""
    from juncture.tools import python_sandbox as sb

    if not _layers():
        pytest.skip("no kernel layers here to break")
    iso = sb.isolation()
    broken = iso.__class__(**{**iso.__dict__, "read_roots": ()})
    monkeypatch.setattr(sb, "isolation", lambda: broken)
    monkeypatch.setattr(sb, "_AUTO_WORKS", {})
    r = PythonTool(LIMITS.model_copy(update={"kernel_isolation": "require"}))("print(2)")
    assert (r.ok, r.error) == (False, "crash") and "sandbox setup failed" in r.output
    tool = PythonTool(LIMITS)
    with caplog.at_level("WARNING"):
        r = tool("print(2)")
    assert r.ok and r.output == "2" and tool.last_layers == ()
    assert "running without them" in caplog.text
