"""The processes of a distributed run: the launcher, one rank's entry point, torchrun's entry.

``lordfx train ... --nproc N`` starts N worker processes on this machine (``launch``), each
one rank (``worker``); under torchrun this process is the rank. If a rank dies, the launcher
stops the others and names it. What a rank does in training (sharding, the gradient
all-reduce, checkpoints) is in ``lordfx_trainer.distributed``, which re-exports these names;
``python -m lordfx_trainer.distributed ARGS`` is ``main`` here (= ``lordfx ARGS``).
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lordfx.errors import LordfxError, UsageError
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.run import STATE_FILE, resolve_device

log = logging.getLogger("lordfx.trainer")
WORKER = "_worker"  # argv[1] of the processes that ``launch`` starts
TIMEOUT = datetime.timedelta(minutes=30)  # a collective waiting this long means a lost rank


def under_torchrun() -> bool:
    """Whether this process is a rank that torchrun (or ``launch``) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or os.environ.get("LORDFX_DIST_WORKER") == "1"


def wanted(nproc: int) -> bool:
    """Whether ``lordfx train`` runs distributed: ``--nproc N > 1`` or under torchrun."""
    if under_torchrun() and nproc != 1:
        raise UsageError("--nproc is for a plain `lordfx train`; torchrun sets --nproc-per-node")
    return nproc > 1 or under_torchrun()


def start(cfg: TrainConfig, run_dir: Path, data_path: Path | None, nproc: int) -> Path | None:
    """A new distributed run: under torchrun this process is one rank; else ``nproc`` ranks."""
    if under_torchrun():
        return worker(run_dir, new=(cfg, data_path))
    from lordfx_trainer.train import create_run

    _check_devices(cfg, nproc)
    create_run(cfg, run_dir, data_path)
    return launch(run_dir, nproc)


def resume(run_dir: Path, nproc: int) -> Path | None:
    """Continue a run on ``nproc`` processes (any number: the content codes re-partition)."""
    if not (run_dir / STATE_FILE).is_file():
        raise LordfxError(f"{run_dir}: no {STATE_FILE} to resume from")
    if under_torchrun():
        return worker(run_dir)
    from lordfx_trainer.run import read_run_config

    _check_devices(read_run_config(run_dir)[0], nproc)
    return launch(run_dir, nproc)


def _check_devices(cfg: TrainConfig, nproc: int) -> None:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise UsageError(
            f"--nproc {nproc} on CUDA needs {nproc} GPUs (one per process), "
            f"found {torch.cuda.device_count()}"
        )


def worker(run_dir: Path, new: tuple[TrainConfig, Path | None] | None = None) -> Path | None:
    """One rank: join the job (env:// rendezvous), rank 0 creates the run if ``new``, train."""
    from lordfx_trainer.distributed import DistributedRun, Shard
    from lordfx_trainer.run import read_run_config
    from lordfx_trainer.train import create_run, reload_run

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cfg = new[0] if new else read_run_config(run_dir)[0]
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        if device.index is not None and world > 1:
            raise UsageError(f"device {cfg.device!r}: use 'cuda' or 'auto' (one GPU per rank)")
        torch.cuda.set_device(local_rank)
    if rank != 0:
        logging.getLogger("lordfx").setLevel(logging.WARNING)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        if new is not None:  # rank 0 makes the run directory; the others learn how it went
            outcome: list[str | None] = [None]
            if rank == 0:
                try:
                    create_run(new[0], run_dir, new[1])
                except LordfxError as exc:
                    outcome = [str(exc)]
            dist.broadcast_object_list(outcome, src=0)
            if outcome[0] is not None:
                raise LordfxError(outcome[0])
        cfg, train, heldout = reload_run(run_dir)
        run = DistributedRun(cfg, run_dir, train, heldout, Shard(rank, world, train.num_images))
        if (run_dir / STATE_FILE).is_file():
            run.load_checkpoint()
        bundle = run.fit()
        dist.barrier()  # rank 0 has written everything
        return bundle
    except RuntimeError as exc:  # gloo reports a dead peer as a plain RuntimeError
        if not _lost_peer(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LordfxError(f"rank {rank}: lost contact with the other ranks ({first})") from None
    finally:
        dist.destroy_process_group()


def _lost_peer(exc: RuntimeError) -> bool:
    """Whether a collective failed because another rank went away (not a bug of ours)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return any(s in text for s in ("Connection closed by peer", "Connection reset", "gloo/"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(run_dir: Path, nproc: int) -> Path | None:
    """Run the job in ``run_dir`` as ``nproc`` worker processes on this machine.

    If one rank fails, the others are stopped and the error names it; checkpoints are written
    atomically by rank 0, so the last one is whole and ``--resume`` continues from it.
    """
    from lordfx_trainer.distributed import Shard
    from lordfx_trainer.run import read_run_config

    cfg, extra = read_run_config(run_dir)
    Shard(0, nproc, (extra.get("train") or {}).get("num_images", nproc))  # enough images?
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
        "LORDFX_DIST_WORKER": "1",
    }
    cmd = [sys.executable, "-m", "lordfx_trainer.distributed", WORKER, str(run_dir)]
    procs = []
    previous = signal.signal(signal.SIGTERM, _terminated)  # a stopped launcher stops its ranks
    try:
        for rank in range(nproc):
            rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            procs.append(subprocess.Popen(cmd, env=rank_env))
        log.info("%s: %d processes, pids %s", run_dir, nproc, [p.pid for p in procs])
        failed = _wait(procs)
    finally:
        _stop(procs)
        signal.signal(signal.SIGTERM, previous)
    if failed is not None:
        rank, code = failed
        how = (
            f"was killed by signal {signal.Signals(-code).name}"
            if code < 0
            else f"exited with status {code} (its error is above)"
        )
        saved = (
            f"the last complete checkpoint is {run_dir / STATE_FILE}: continue with "
            f"`lordfx train --resume {run_dir} --nproc {nproc}`"
            if (run_dir / STATE_FILE).is_file()
            else "no checkpoint was written yet"
        )
        raise LordfxError(
            f"{run_dir}: rank {rank} (pid {procs[rank].pid}) {how}; "
            f"stopped the other ranks; {saved}"
        )
    return run_dir / "bundle" if cfg.amortized_epochs > 0 else None


def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _wait(procs: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait for every rank; on the first failure, the (rank, return code) that caused it.

    A rank killed by a signal is named before ranks that then failed for losing it.
    """
    while True:
        codes = [p.poll() for p in procs]
        if all(c == 0 for c in codes):
            return None
        if any(c not in (None, 0) for c in codes):
            time.sleep(1.0)  # let the ranks that lost their peer report it
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            killed = [(r, c) for r, c in failed if c < 0]
            return (killed or failed)[0]
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the ranks still running (SIGTERM, then SIGKILL after 10 s)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class _RankHandler(logging.Handler):
    """``lordfx: level: message`` (rank 0) or ``lordfx: rank R: level: message``."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.prefix = "lordfx: " if rank == 0 else f"lordfx: rank {rank}: "

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"{self.prefix}{record.levelname.lower()}: {record.getMessage()}\n")


def _worker_main(run_dir: Path) -> int:
    """Entry of a process started by ``launch`` (the run directory already exists)."""
    rank = int(os.environ["RANK"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the launcher, which stops us
    root = logging.getLogger("lordfx")
    root.addHandler(_RankHandler(rank))
    root.propagate = False
    root.setLevel(logging.INFO)
    try:
        worker(run_dir)
    except LordfxError as exc:
        prefix = "" if str(exc).startswith("rank ") else f"rank {rank}: "
        sys.stderr.write(f"lordfx: error: {prefix}{exc}\n")
        return exc.exit_code
    return 0


def _exit_now(code: int) -> None:
    """Leave a finished rank without interpreter finalisation.

    The rank has left the process group and everything it writes is on disk; tearing down
    the interpreter while gloo's C++ threads still hold Python objects can abort the process
    (``terminate called without an active exception``, SIGABRT) after the work is done, which
    the launcher must then report as a failed rank (seen once in CI on a 3-process resume).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """``python -m lordfx_trainer.distributed train ...`` (for torchrun) = ``lordfx train ...``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [WORKER] and len(args) == 2:
        _exit_now(_worker_main(Path(args[1])))
    from lordfx.cli import build_app

    build_app()(args=args, prog_name="lordfx")
