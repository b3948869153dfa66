"""Running under systemd: readiness, status, watchdog pings and stop on a
fake $NOTIFY_SOCKET; a socket passed by socket activation ($LISTEN_FDS);
--log-format json, and plain lines without times when stderr is the
journal's; contrib/corral.service passes `systemd-analyze verify`; and the
start-up banner."""
import json
import os
import shutil
import signal
import socket
import subprocess

import time

import pytest
import requests

from conftest import CORRAL_BIN, MODEL, ROOT, TEST_MODEL, _die_with_parent


def start(args, env_extra, pass_fds=(), preexec=None):
    env = dict(os.environ)
    env.update(env_extra)
    return subprocess.Popen([CORRAL_BIN, "serve", "--model", "%s=%s" % (MODEL, TEST_MODEL), "--threads", "1",
                             "--max-concurrent", "2"] + list(args), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=pass_fds,
                            preexec_fn=preexec or _die_with_parent)


def recv_until(sock, want, timeout=30.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg:
            return msg, got
    raise AssertionError("no %r among the notifications %r" % (want, got))


def test_notify_ready_status_watchdog_and_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    p = start(["--port", "0", "--preload", MODEL], {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    try:
        ready, before = recv_until(ns, "READY=1")
        assert "STATUS=" in ready and "1 models, 1 loaded" in ready, ready  # after the preload
        assert not any("READY" in m for m in before[:-1])
        ping, _ = recv_until(ns, "WATCHDOG=1", timeout=5)
        assert "STATUS=" in ping
        recv_until(ns, "WATCHDOG=1", timeout=2)  # again, every half interval
        p.send_signal(signal.SIGTERM)
        recv_until(ns, "STOPPING=1", timeout=10)
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
        ns.close()


def test_socket_activation(tmp_path):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]
    fd = ls.fileno()

    def child():
        _die_with_parent()
        os.dup2(fd, 3)  # SD_LISTEN_FDS_START
        # systemd names the process the sockets are for; the child's environ goes to exec (env=None)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"

    p = subprocess.Popen([CORRAL_BIN, "serve", "--model", "%s=%s" % (MODEL, TEST_MODEL), "--threads", "1",
                          "--port", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, pass_fds=(fd, 3), preexec_fn=child)
    try:
        line = p.stdout.readline().decode()
        assert line.strip() == "corral: listening on port %d" % port, line
        r = requests.post("http://127.0.0.1:%d/v1/chat/completions" % port, timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 200, r.text
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        ls.close()


def test_log_formats_and_banner(tmp_path):
    p = start(["--port", "0", "--log-format", "json"], {})
    try:
        p.stdout.readline()
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    lines = [json.loads(x) for x in err.decode().splitlines() if x.strip()]
    assert all(set(x) == {"time", "level", "msg"} for x in lines), lines[:3]
    msgs = [x["msg"] for x in lines]
    # the banner: where, which models, capacity and its source, memory, the status page
    assert any(m.startswith("corral ") and "serving on http://127.0.0.1:" in m for m in msgs), msgs
    assert any("models" in m and MODEL + " (lazy)" in m for m in msgs), msgs
    assert any("capacity  2 generations at once (config)" in m for m in msgs), msgs
    assert any("status" in m and "/v1/status" in m for m in msgs), msgs
    # stderr that is the journal's stream: syslog priorities, no times
    with open(tmp_path / "journal.log", "wb") as f:
        st = os.fstat(f.fileno())
        q = subprocess.Popen([CORRAL_BIN, "serve", "--model", "%s=%s" % (MODEL, TEST_MODEL), "--port", "0",
                              "--threads", "1"], stdout=subprocess.PIPE, stderr=f,
                             env=dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino)),
                             preexec_fn=_die_with_parent)
        q.stdout.readline()
        q.send_signal(signal.SIGTERM)
        q.wait(timeout=30)
    text = (tmp_path / "journal.log").read_text().splitlines()
    assert text and all(line.startswith("<") and line[2] == ">" for line in text), text[:3]
    assert not any("Z info" in line for line in text)
    assert p.returncode == 0 and q.returncode == 0
    r = subprocess.run([CORRAL_BIN, "serve", "--model", "%s=%s" % (MODEL, TEST_MODEL), "--log-format", "xml"],
                       capture_output=True, timeout=10)
    assert r.returncode == 2 and b"log_format" in r.stderr


def test_unit_file_verifies(tmp_path):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    for unit in ("corral.service", "corral.socket"):
        with open(os.path.join(ROOT, "contrib", unit)) as f:
            text = f.read()
        # the unit names the installed binary; verify it against this build's
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/corral", os.path.abspath(CORRAL_BIN)))
        r = subprocess.run([tool, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and not r.stderr.strip(), (unit, r.stdout, r.stderr)
    assert "Type=notify" in open(os.path.join(ROOT, "contrib", "corral.service")).read()

