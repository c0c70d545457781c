"""`inrrecon pretrain MEAS.h5 [MEAS.h5 ...] --out MODEL_DIR`: DisINR's population prior from raw
measurements, in one process or under torchrun (one process per GPU, or gloo on CPUs):

    torchrun --nproc-per-node 4 -m INRReconLib.cli pretrain cohort/*.h5 --out model --device cuda

Each process fits its share of the subjects; rank 0 prints the progress and writes the model.
Ctrl-C stops every process after the same step and the model so far is written (under torchrun,
within its --shutdown-timeout: 30 s unless given, after which it kills the processes).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from .errors import InputError
from .methods.monitor import Monitor


def add_parser(sub):
    p = sub.add_parser("pretrain", help="pre-train a DisINR population model from measurement files (no images)")
    p.add_argument("measurements", nargs="+", help="measurement files of the cohort (one modality)")
    p.add_argument("--out", required=True, help="model folder to write (weights as safetensors + model.json)")
    p.add_argument("--config", default=None, help="preset (disinr-ct-fast, disinr-ct, disinr-mr-fast, disinr-mr) or "
                                                  "JSON/YAML file")
    p.add_argument("--iterations", type=int, default=None, help="pre-training steps (default: the preset's "
                                                                "pretrain_iterations)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (under torchrun: each process "
                                                     "takes the GPU of its local rank)")


class _StoppableMonitor(Monitor):
    """Records the loss, draws it on rank 0, and stops when asked (Ctrl-C)."""

    def __init__(self, bar, stop: threading.Event):
        super().__init__()
        self.bar, self.stop = bar, stop

    def report(self, stage, iteration, total, loss=None, current=None, **extra):
        super().report(stage, iteration, total, loss=loss, **extra)
        if self.bar is not None:
            self.bar({"event": "progress", "stage": stage, "iteration": iteration, "total": total, "loss": loss})

    def stop_requested(self) -> bool:
        return self.stop.is_set()


def _distributed(device: str):
    """Under torchrun: join the process group (nccl for CUDA, else gloo); the device of this rank."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        return device  # resolve_device names the missing GPU, on every rank
    cuda = device != "cpu" and torch.cuda.is_available()
    # NCCL moves CUDA tensors only; the loop's small numbers (loss, stop flag, CT unit) are CPU
    # tensors, so CPU collectives go through gloo in the same group.
    torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def run(args, bar_factory) -> int:
    import torch

    from .io.model_dir import prepare_folder, save_model
    from .methods.pretrain import pretrain
    from .worker.run import resolve_device

    if args.iterations is not None and args.iterations < 1:
        raise InputError("--iterations", f"must be a positive integer, got {args.iterations}.")
    out = Path(args.out)
    for m in args.measurements:
        if Path(m).resolve() == out.resolve():
            raise InputError("--out", f"{out} is also one of the measurements.", "Give a new folder for the model.")
    device = _distributed(args.device)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        prepare_folder(out)  # refused before an hour of training, not after
    device, _ = resolve_device(device)
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if rank == 0:
            print("\ninrrecon pretrain: stopping after this step and writing the model so far "
                  "(Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        monitor = _StoppableMonitor(bar_factory() if rank == 0 else None, stop)
        field, meta = pretrain(args.measurements, config=args.config, iterations=args.iterations, device=device,
                               monitor=monitor)
        if rank == 0:
            save_model(out, field.shared_state(), meta)
            t = meta["training"]
            note = " (stopped early: the model so far)" if t["stopped_early"] else ""
            print(f"\nwrote {out}: {t['steps']} of {t['planned_steps']} steps on {len(meta['cohort'])} scans, "
                  f"loss {t['loss_first']:.4g} -> {t['loss_last']:.4g}, {t['seconds']:.0f} s{note}")
    finally:
        signal.signal(signal.SIGINT, previous)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
