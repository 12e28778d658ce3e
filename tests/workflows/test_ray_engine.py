"""`advseg reproduce --engine ray`: the smoke study as Ray tasks writes the local engine's tables,
a worker killed mid-step is retried, Ctrl-C leaves nothing running, a re-run joins a head started
with `ray start` and resumes; on a two-node cluster steps land on both nodes and a SQLite store
is refused. Every Ray port stays on the loopback interface."""

from __future__ import annotations

import contextlib
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
from click.testing import CliRunner
from support import ADVSEG, assert_help_files_written, free_ports, smoke_command

ray = pytest.importorskip("ray")  # the dev extra installs it; `make test` has it

import ray_steps  # noqa: E402
from ray_steps import die, where  # noqa: E402

from keras_advseg.cli import main  # noqa: E402
from keras_advseg.errors import ClusterError, InputError  # noqa: E402
from keras_advseg.io import write_text_atomic  # noqa: E402
from keras_advseg.workflows.ray_engine import (  # noqa: E402
    SINGLE_MACHINE_SWITCH,
    RayEngine,
    is_loopback,
    is_machine_local_store,
    on_loopback,
    step_log_name,
)
from keras_advseg.workflows.scheduler import Step  # noqa: E402
from keras_advseg.workflows.study_record import Progress  # noqa: E402

pytestmark = pytest.mark.slow

KILLED_STEP = "seed 0: evaluate unet3d-none"
"""The step whose worker the smoke study's test kills once its MLflow run is open."""

RERUN = ("seed 0: audit unet3d-none", "seed 0: card unet3d-none", "seed 0: leaderboard")
"""Steps the resume test takes out of ``progress.json`` so that they run again: the first is
interrupted (an audit: one of the smoke study's longer steps, so that the Ctrl-C reaches it
while its MLflow run is open), the others read it."""


def ours_listening() -> set[tuple[str, int, str]]:
    """The TCP addresses this process and the processes it started (Ray's head, nodes and
    workers, a `ray start` head) listen on, with the listening process's name."""
    import psutil

    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    if listening and all(c.pid is None for c in listening):
        # a machine that hides other processes' sockets from their owner: every listener
        # counts (the caller compares with what listened before), named by its port alone
        return {(c.laddr.ip, c.laddr.port, "ray?") for c in listening}
    found = set()
    for c in listening:
        if c.pid in mine:
            try:
                name = psutil.Process(c.pid).name()
            except psutil.Error:
                name = "?"
            found.add((c.laddr.ip, c.laddr.port, name))
    return found


def is_loopback_ip(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    """Fails the module if a process it started listened outside the loopback range while its
    tests ran (sampled every 0.2 s, since Ray's processes come and go): the Ray engine's
    own switch must keep a local cluster, and a head on 127.0.0.1, there."""
    seen, stop = set(), threading.Event()
    before = {(ip, port) for ip, port, _ in ours_listening()}  # not the tests' (fallback)

    def sample():
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a process gone mid-listing: sampled again
                seen.update(ours_listening())
            stop.wait(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    planted: set[int] = set()  # ports the check's own test opened outside loopback
    yield planted
    stop.set()
    watcher.join()
    ray_ports = [a for a in seen if a[2] in ("raylet", "gcs_server") or "ray" in a[2]]
    assert ray_ports, "no Ray process was seen listening: the check saw nothing"
    outside = sorted(
        a
        for a in seen
        if not is_loopback_ip(a[0]) and a[1] not in planted and (a[0], a[1]) not in before
    )
    assert not outside, f"listening outside the loopback interface: {outside}"


def test_the_loopback_check_sees_a_listener_outside_loopback(loopback_only):
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        loopback_only.add(port)  # planted here: not a Ray process's
        assert any(p == port and not is_loopback_ip(ip) for ip, p, _ in ours_listening())


def tables(study: Path) -> dict[str, bytes]:
    """Every CSV table a study wrote, by its path under the study."""
    return {str(p.relative_to(study)): p.read_bytes() for p in sorted(study.rglob("*.csv"))}


def runs(uri: str, experiment: str = "advseg-reproduce-smoke") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def kill_when_running(uri: str, step: str, logs: Path, done: threading.Event) -> list:
    """Kills (SIGKILL) the worker of ``step`` once its MLflow run is RUNNING; returns its PID
    (or the error that stopped the watch)."""
    from keras_advseg.tracking import STUDY_STEP_TAG

    killed: list = []

    def watch():
        log = logs / step_log_name(step)
        try:
            while not done.is_set():
                opened = [
                    r
                    for r in runs(uri)
                    if r.data.tags.get(STUDY_STEP_TAG) == step and r.info.status == "RUNNING"
                ]
                text = log.read_text() if log.is_file() else ""
                if opened and f"== {step}: attempt 1 on" in text and "done in" not in text:
                    pid = int(text.split("pid ")[1].split(",")[0])
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.2)
        except Exception as exc:  # a locked store: said in the test's message
            killed.append(exc)

    threading.Thread(target=watch, daemon=True).start()
    return killed


@pytest.fixture(scope="module")
def ray_study(tmp_path_factory):
    """The smoke study with ``--engine ray`` on a local cluster, its baseline's evaluation
    killed mid-step once: the study folder, its store's URI, the output and the killed PID."""
    root = tmp_path_factory.mktemp("ray-study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = threading.Event()
    killed = kill_when_running(uri, KILLED_STEP, root / "study" / "logs", done)
    result = CliRunner().invoke(main, smoke_command(root / "study", uri, "--engine", "ray"))
    done.set()
    assert result.exit_code == 0, result.output[-3000:]
    return root / "study", uri, result.output, killed


def test_the_smoke_study_on_ray_writes_the_local_engines_tables_despite_a_killed_worker(
    ray_study, request
):
    study, uri, output, killed = ray_study
    assert killed and isinstance(killed[0], int), f"{KILLED_STEP} was not killed: {killed}"
    # the killed step was retried, said so, and its first attempt's run marked FAILED
    assert f"{KILLED_STEP}: its worker died (" in output and "retry 1 of 2" in output
    assert f"{KILLED_STEP}: 1 run it left running marked FAILED" in output
    log = (study / "logs" / step_log_name(KILLED_STEP)).read_text()
    assert "attempt 1 on node 127.0.0.1" in log and "attempt 2 on node 127.0.0.1" in log
    assert f"pid {killed[0]}," in log
    # every step ran as a task on the local cluster's node, said where
    progress = json.loads((study / "progress.json").read_text())
    steps = [name for name in progress if name != "(elapsed)"]
    assert output.count(" on 127.0.0.1 (") == len(steps)
    assert all((study / "logs" / step_log_name(name)).is_file() for name in steps)
    assert "Ray cluster: 1 node" in output
    assert_help_files_written(("reproduce",), study)
    # the same tables as the local engine's, bit for bit
    local = request.getfixturevalue("smoke_study") / "study"
    ours, theirs = tables(study), tables(local)
    assert sorted(ours) == sorted(theirs) and len(ours) > 30
    assert [name for name in ours if ours[name] != theirs[name]] == []
    # and the same runs: all finished but the killed attempt's
    statuses = sorted(r.info.status for r in runs(uri))
    local_runs = runs(f"sqlite:///{local.parent / 'mlflow.db'}")
    assert statuses.count("FAILED") == 1 and "RUNNING" not in statuses
    assert statuses.count("FINISHED") == len(local_runs)
    assert not [p for p in study.rglob("*") if ".partial" in p.name]


def test_ctrl_c_cancels_the_running_steps_and_a_rerun_on_a_ray_start_head_resumes(
    ray_study, tmp_path
):
    from keras_advseg.tracking import STUDY_STEP_TAG

    study, uri, _, _ = ray_study
    progress = json.loads((study / "progress.json").read_text())
    for name in RERUN:
        del progress[name]
    write_text_atomic(study / "progress.json", json.dumps(progress))
    before, earlier = tables(study), {r.info.run_id for r in runs(uri)}
    # a head node started as a user would, on 127.0.0.1 (docs/scaling.md's recipe); the
    # interrupted run and the re-run join it
    (port,) = free_ports(1)
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        env=dict(os.environ, **{SINGLE_MACHINE_SWITCH: "0"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    joined = smoke_command(study, uri, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}")
    try:
        wait_for_port(port, head)
        # Ctrl-C on the driver while a step runs: its run ends KILLED, no temporary is left
        driver = subprocess.Popen(
            ADVSEG + joined,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.time() + 240
            while time.time() < deadline and not any(
                r.data.tags.get(STUDY_STEP_TAG) == RERUN[0] and r.info.status == "RUNNING"
                for r in runs(uri)
            ):
                time.sleep(0.2)
            driver.send_signal(signal.SIGINT)
            _, stderr = driver.communicate(timeout=180)
        finally:
            if driver.poll() is None:  # it did not stop: leave nothing running
                driver.kill()
        assert driver.returncode != 0 and "Traceback" not in stderr, stderr[-3000:]
        assert "stopping 1 running step (at most 60 s)" in stderr
        interrupted = [r for r in runs(uri) if r.info.run_id not in earlier]
        assert [(r.data.tags[STUDY_STEP_TAG], r.info.status) for r in interrupted] == [
            (RERUN[0], "KILLED")
        ]
        assert not [p for p in study.rglob("*") if ".partial" in p.name]
        assert not set(RERUN) & set(json.loads((study / "progress.json").read_text()))
        rerun = CliRunner().invoke(main, joined)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert rerun.exit_code == 0, rerun.output[-3000:]
    for name in RERUN:  # run again, on the head's node
        assert f"    {name}: done in " in rerun.output
    done = [n for n in progress if n != "(elapsed)" and n != "prepare" and not n.endswith("report")]
    assert rerun.output.count("skipped (done before)") == len(done)
    assert tables(study) == before  # the same tables again


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "ray start --head exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"no Ray head on 127.0.0.1:{port}")


def test_a_two_node_cluster_runs_steps_on_both_refuses_sqlite_and_names_what_fails(
    tmp_path, capfd, monkeypatch
):
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    # the workers do not have the suite's folder on their path: the steps travel as code
    cloudpickle.register_pickle_by_value(ray_steps)
    with on_loopback():  # as the engine does for a local cluster: two nodes on 127.0.0.1
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1))
        cluster.add_node(num_cpus=1)
    try:
        engine = RayEngine(address=cluster.address, max_retries=1)
        out = tmp_path / "study"
        out.mkdir()
        (out / "study.json").write_text("{}")
        sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"
        for store in (sqlite, "http://127.0.0.1:5000"):  # neither reaches the other node
            with pytest.raises(InputError, match="cannot be shared by the 2 nodes") as e:
                with engine.connected(out, store, "study"):
                    pass
            assert "mlflow server" in str(e.value) and "\n" not in str(e.value)
        # a database elsewhere passes (nothing is tracked here: its driver is not installed)
        server = "postgresql://advseg@192.0.2.1/mlflow"
        steps = [Step(n, where, {"folder": out, "name": n}) for n in "abcd"]
        steps.append(Step("e", where, {"folder": out, "name": "e"}, ("a", "b", "c", "d")))
        progress = Progress([s.name for s in steps], out / "progress.json")
        with engine.connected(out, server, "study") as running:
            running.run_steps(steps, progress)
        nodes = {(out / n).read_text() for n in "abcde"}
        assert len(nodes) == 2  # both nodes took steps
        assert sorted(json.loads((out / "progress.json").read_text())) == [
            "(elapsed)",
            *"abcde",
        ]
        said = capfd.readouterr().err
        assert "Ray cluster: 2 nodes, 2 CPUs, no GPU" in said
        assert said.count("done in") == 5 and said.count(" on 127.0.0.1 (") == 5
        # a step that cannot see what it reads fails at once, naming the node and the path
        missing = tmp_path / "elsewhere" / "prepared.json"
        blind = [Step("f", where, {"folder": out, "name": "f"}, reads=(missing,))]
        with engine.connected(out, server, "study") as running:
            with pytest.raises(ClusterError, match=f"cannot see {missing}"):
                running.run_steps(blind, Progress(["f"], out / "progress.json"))
            # a step whose worker keeps dying stops the study in one line naming it and its log
            with pytest.raises(ClusterError) as failed:
                running.run_steps([Step("g", die)], Progress(["g"], out / "progress.json"))
        assert str(failed.value) == (
            f"step 'g' failed 2 times, its worker lost each time (WorkerCrashedError); "
            f"its log: {out / 'logs' / 'g.log'}"
        )
        said = capfd.readouterr().err
        assert said.count("g: its worker died (WorkerCrashedError") == 1
        assert said.count("g: its runs could not be ended") == 2  # the store is not there
        # a folder the nodes do not share is refused before any step: here the nodes look
        # for the driver's mark in the study folder, and the driver left it elsewhere
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        import keras_advseg.workflows.ray_engine as ray_engine

        write_marker = ray_engine._write_marker
        monkeypatch.setattr(ray_engine, "_write_marker", lambda _, t: write_marker(elsewhere, t))
        with pytest.raises(ClusterError, match=f"cannot see the study folder {out}: it must"):
            with engine.connected(out, server, "study"):
                pass
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_addresses_stores_and_options_of_the_engine(tmp_path, monkeypatch):
    assert is_loopback(None) and is_loopback("127.0.0.1:6379") and is_loopback("localhost:1")
    assert is_loopback("[::1]:6379") and not is_loopback("10.0.0.5:6379")
    assert not is_loopback("head.cluster.example:6379")
    assert is_machine_local_store("sqlite:///x.db") and is_machine_local_store("mlruns")
    assert is_machine_local_store("http://localhost:5000")
    assert is_machine_local_store("postgresql://u@127.0.0.1/db")
    assert not is_machine_local_store("http://server:5000")
    assert not is_machine_local_store("postgresql://u@db.example/db")
    assert step_log_name("seed 0: evaluate unet3d-distillation-T20 at T=20") == (
        "seed-0-evaluate-unet3d-distillation-T20-at-T=20.log"
    )
    with pytest.raises(InputError, match="--gpus-per-step must be in"):
        RayEngine(gpus_per_step=2)
    # the options of the Ray engine need it, and Ray missing is said in one line
    runner = CliRunner()
    base = smoke_command(tmp_path / "s", f"sqlite:///{tmp_path / 'm.db'}")
    for option, value in (("--ray-address", "auto"), ("--gpus-per-step", "0"), ("--retries", "2")):
        result = runner.invoke(main, base + [option, value])
        assert result.exit_code == 2 and f"{option} needs --engine ray" in result.output
    result = runner.invoke(main, base + ["--engine", "ray", "--ray-address", "ray://head:10001"])
    assert result.exit_code == 2 and "Ray Client (ray://) is not supported" in result.output
    # the loopback switch holds while the engine is connected, and is put back after
    monkeypatch.delenv(SINGLE_MACHINE_SWITCH, raising=False)
    with on_loopback():
        assert os.environ[SINGLE_MACHINE_SWITCH] == "0"
    assert SINGLE_MACHINE_SWITCH not in os.environ
    monkeypatch.setitem(sys.modules, "ray", None)
    result = runner.invoke(main, base + ["--engine", "ray"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'needs Ray, which is not installed: pip install "keras-advseg[cluster]"' in result.output
    assert not (tmp_path / "s").exists()  # refused before the study began
