"""Run model-written Python in a separate, resource-limited process.

Threat model: this contains the *accidents* of model-written code (infinite loops, memory and
fork bombs, runaway output, network calls, clobbered files); it is not a security boundary
against a determined attacker. Each call gets:

- a fresh `python -I -B` process (no user site, PYTHON* variables ignored) in its own session;
  the whole process group is killed at the wall-clock timeout;
- rlimits on CPU time, address space, file size and core dumps, plus process count when not
  root (the kernel does not apply RLIMIT_NPROC to root);
- a scrubbed environment whose HOME, TMPDIR and working directory are a fresh temporary
  directory, removed afterwards;
- a PEP 578 audit hook that refuses sockets, process creation (fork, exec, spawn, system,
  subprocess), signals to other processes, raising rlimits, importing ctypes (raw memory
  access could disable the hook; this also makes sympy unimportable) and writing, renaming or
  deleting files outside the working directory.

Not isolated: the code can read whatever the trainer's user can read, and audit hooks can be
evaded (a C extension, `os.open` with `dir_fd`, tampering with the hook's closure). There are
no namespaces, seccomp filters or cgroups: run training in a container for hard isolation.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from juncture.config import PythonToolConfig
from juncture.tools.base import ToolResult

OUTPUT_FILE_LIMIT = 1 << 20  # bytes: RLIMIT_FSIZE, so runaway printing stops early
_EXIT_GRACE_S = 0.2  # once the status pipe has closed, time left for the interpreter to exit
# Isolated mode (no user site, PYTHON* ignored), no .pyc writes, UTF-8 stdio whatever the locale.
_INTERPRETER = (sys.executable, "-I", "-B", "-X", "utf8")

# The child's bootstrap, run with `python -c`. It depends on the stdlib only, sets its own
# rlimits (a preexec_fn is unsafe in the multithreaded trainer), installs the audit hook, runs
# the code and writes one status word to the pipe fd given in argv.
_CHILD = r"""
import ast, linecache, os, resource, sys, traceback

def main():
    status_fd, work = int(sys.argv[1]), sys.argv[2]
    limits = zip(
        (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC),
        map(int, sys.argv[3:7]),
    )
    for res, n in (*limits, (resource.RLIMIT_CORE, 0)):
        if n >= 0:
            hard = resource.getrlimit(res)[1]
            n = n if hard == resource.RLIM_INFINITY else min(n, hard)
            resource.setrlimit(res, (n, n))
    src = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
    sys.stdout.reconfigure(line_buffering=True)  # keep partial output if killed at the timeout
    sys.addaudithook(make_hook(work))
    status = run(src)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # the output file limit was reached
            pass
    os.write(status_fd, status.encode())
    os._exit(0)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
DENIED_EVENTS = {"os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen",
                 "os.kill", "os.killpg", "resource.setrlimit", "resource.prlimit"}
DENIED_IMPORTS = {"ctypes", "_ctypes", "_posixsubprocess"}
# event -> (indices of path arguments, indices of dir_fd arguments)
PATH_EVENTS = {
    "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
    "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((0, 1), (2,)),
    "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)),
    "os.truncate": ((0,), ()), "shutil.rmtree": ((0,), (1,)),
}

def make_hook(work):
    def inside(path):
        if isinstance(path, int):  # an already-open file descriptor
            return True
        try:
            real = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return real in (work, os.devnull) or real.startswith(work + os.sep)

    def deny(kind, what, cls=PermissionError):
        err = cls(f"sandbox: {what} is not allowed")
        err.sandbox_kind = kind
        raise err

    def hook(event, args):
        if event.startswith("socket."):
            deny("network", f"network access ({event})")
        elif event in DENIED_EVENTS:
            deny("forbidden", event)
        elif event == "import":
            if args[0].partition(".")[0] in DENIED_IMPORTS:
                deny("forbidden", f"importing {args[0]}", ImportError)
        elif event == "open":
            if (args[2] or 0) & WRITE_FLAGS and not inside(args[0]):
                deny("forbidden", f"writing {args[0]!r} outside the working directory")
        elif event in PATH_EVENTS:
            paths, dir_fds = PATH_EVENTS[event]
            if any(args[i] not in (None, -1) for i in dir_fds) or not all(inside(args[i]) for i in paths):
                deny("forbidden", f"{event} outside the working directory")

    return hook

def show(err):
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == "<code>"][-3:]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    sys.stderr.write("".join(lines + traceback.format_exception_only(type(err), err)))

def kind_of(err):
    for _ in range(8):  # the hook's error may be wrapped, e.g. URLError around a socket error
        if err is None:
            break
        if getattr(err, "sandbox_kind", None):
            return err.sandbox_kind
        err = err.__cause__ or err.__context__
    return "exception"

def run(src):
    try:
        tree = ast.parse(src, "<code>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        body = compile(tree, "<code>", "exec")
        tail = compile(ast.Expression(last.value), "<code>", "eval") if last else None
    except MemoryError:
        return "memory"
    except Exception as err:  # SyntaxError, or ValueError for NUL bytes, RecursionError when nested
        sys.stderr.write("".join(traceback.format_exception_only(type(err), err)))
        return "syntax"
    linecache.cache["<code>"] = (len(src), None, src.splitlines(True), "<code>")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(body, namespace)
        value = None if tail is None else eval(tail, namespace)
        sys.stdout.flush()
        if value is not None and os.fstat(1).st_size == 0:  # notebook-style bare last expression
            print(repr(value))
    except SystemExit as err:
        if err.code not in (None, 0):
            show(err)
            return "exception"
    except MemoryError:
        return "memory"
    except BaseException as err:
        show(err)
        return kind_of(err)
    return "ok"

main()
"""


def _nproc_limit(extra: int) -> int:
    """RLIMIT_NPROC counts all of the user's threads, so allow today's total plus `extra`.

    Returns -1 (leave unset) for root, which the kernel does not limit, or without /proc.
    """
    if os.geteuid() == 0:
        return -1
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[1]) + extra
    except (OSError, ValueError, IndexError):
        return -1


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head and the tail (where errors are) of over-long output."""
    if len(text) <= limit:
        return text, False
    keep = max(limit - len(f"\n…[{len(text)} characters truncated]…\n"), 0)
    marker = f"\n…[{len(text) - keep} characters truncated]…\n"
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head) :], True


def _wait(proc: subprocess.Popen, status_fd: int, timeout_s: float) -> tuple[str, bool]:
    """Return (status word, timed_out); kill the child's process group at the deadline."""
    deadline = time.monotonic() + timeout_s
    poller = select.poll()
    poller.register(status_fd, select.POLLIN)
    status, closed = b"", False
    while not closed and (left := deadline - time.monotonic()) > 0 and poller.poll(left * 1000):
        chunk = os.read(status_fd, 64)
        closed = not chunk  # the child is exiting (or closed the pipe itself)
        status += chunk
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0) + _EXIT_GRACE_S if closed else 0)
        return status.decode("ascii", "replace"), False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "", True


class PythonTool:
    """Runs a code string and returns its stdout+stderr (or the bare last expression's repr)."""

    name = "python"

    def __init__(self, cfg: PythonToolConfig | None = None):
        self.cfg = cfg or PythonToolConfig()

    def __call__(self, query: str) -> ToolResult:
        if not isinstance(query, str):
            return ToolResult("error: the code must be text", ok=False, error="bad_query")
        if not query.strip():
            return ToolResult("error: no code to run", ok=False, error="empty")
        try:
            return self._run(query)
        except Exception as e:  # a tool must never raise into the agent loop
            return ToolResult(f"error: sandbox failed: {type(e).__name__}: {e}", ok=False, error="crash")

    def _run(self, code: str) -> ToolResult:
        cfg = self.cfg
        limits = (
            cfg.memory_mb << 20,
            math.ceil(cfg.timeout_s) + 1,
            OUTPUT_FILE_LIMIT,
            _nproc_limit(cfg.max_processes),
        )
        status_r, status_w = os.pipe()
        try:
            with (
                tempfile.TemporaryDirectory(prefix="juncture-py-", ignore_cleanup_errors=True) as tmp,
                tempfile.TemporaryFile() as src,
                tempfile.TemporaryFile() as out,
            ):
                work = os.path.realpath(tmp)
                src.write(code.encode("utf-8", "surrogatepass"))
                src.seek(0)
                proc = subprocess.Popen(
                    [*_INTERPRETER, "-c", _CHILD, str(status_w), work, *map(str, limits)],
                    stdin=src,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=work,
                    env=_child_env(work),
                    pass_fds=(status_w,),
                    start_new_session=True,
                )
                os.close(status_w)
                status_w = -1
                status, timed_out = _wait(proc, status_r, cfg.timeout_s)
                out.seek(0)
                raw = out.read(OUTPUT_FILE_LIMIT + 1)
        finally:
            for fd in (status_r, status_w):
                if fd >= 0:
                    os.close(fd)
        return self._result(raw, status, timed_out, proc.returncode)

    def _result(self, raw: bytes, status: str, timed_out: bool, returncode: int) -> ToolResult:
        kind, note = self._classify(status, timed_out, returncode, len(raw) >= OUTPUT_FILE_LIMIT)
        text, truncated = _truncate(raw.decode("utf-8", "replace").rstrip(), self.cfg.max_output_chars)
        if note:
            text = f"{text}\n{note}" if text else note
        if kind is None:
            return ToolResult(text, ok=True, error="output_truncated" if truncated else None)
        return ToolResult(text, ok=False, error=kind)

    def _classify(
        self, status: str, timed_out: bool, returncode: int, output_full: bool
    ) -> tuple[str | None, str | None]:
        """Return (error kind or None, note for the model); the child printed its own tracebacks."""
        if timed_out or (not status and returncode in (-signal.SIGKILL, -signal.SIGXCPU)):
            return "timeout", f"error: timeout after {self.cfg.timeout_s} s"
        if status == "memory":
            return "memory", f"error: memory limit of {self.cfg.memory_mb} MB exceeded"
        if output_full and status != "ok":
            return "output_truncated", f"error: output limit of {OUTPUT_FILE_LIMIT} bytes exceeded"
        if status in ("syntax", "exception", "network", "forbidden"):
            return status, None
        if status == "ok" or (not status and returncode == 0):
            return None, None
        if returncode > 0:
            return "exception", f"error: exited with status {returncode}"
        return "crash", f"error: the interpreter died ({_describe(returncode)})"


def _describe(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _child_env(work: str) -> dict[str, str]:
    """A minimal environment: nothing of the trainer's, home and temp files in `work`."""
    single_thread = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    return {"PATH": os.defpath, "HOME": work, "TMPDIR": work, **single_thread}
