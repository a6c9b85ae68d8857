"""Every rank's per-sample accounting reaches the run's figures once: ``gather_records`` over a real
two-process gloo group, and ``run_metrics`` through lmms-eval's own ``log_metrics`` summary."""

from __future__ import annotations

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from llava.eval import efficiency as eff
from llava.model.record import SampleRecord


def _record(rank: int, i: int, failed: bool = False) -> dict:
    return SampleRecord(task="t", doc_id=10 * rank + i, compression="aot@0.1", failed=failed, frames=8,
                        visual_tokens=100 + rank, visual_tokens_plain=1000, retention=0.1,
                        output_tokens=3, ttft_ms=5.0).to_dict()


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        mine = [_record(rank, i, failed=(rank == 1 and i == 0)) for i in range(2 + rank)]
        records, seconds = eff.gather_records(mine, 1.5 + rank, world_size=2)
        if rank == 0:
            import json

            with open(out, "w") as fh:
                json.dump({"records": records, "seconds": seconds}, fh)
    finally:
        dist.destroy_process_group()


def test_gather_records_over_two_ranks(tmp_path):
    import json
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "gathered.json"
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    data = json.loads(out.read_text())
    assert sorted(r["doc_id"] for r in data["records"]) == [0, 1, 10, 11, 12]
    assert data["seconds"] == pytest.approx(1.5 + 2.5)
    assert eff.aggregate(data["records"])["failed_doc_ids"] == [10]


def test_alone_and_without_a_process_group():
    records = [_record(0, 0)]
    assert eff.gather_records(records, 2.0, world_size=1) == (records, 2.0)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="torch.distributed is not initialized"):
            eff.gather_records(records, 2.0, world_size=2)


def test_run_metrics_land_in_lmms_eval_throughput_summary():
    from lmms_eval.models.model_utils import gen_metrics as gm

    records = [_record(0, 0), _record(0, 1), _record(1, 0, failed=True)]
    gm.reset_logged_metrics()
    try:
        gm.log_metrics(**eff.run_metrics(records, 4.0))
        summary = gm.summarize_logged_metrics()
    finally:
        gm.reset_logged_metrics()
    assert summary["avg_samples"] == 3 and summary["avg_failed_samples"] == 1
    assert summary["avg_visual_tokens"] == 100 and summary["avg_retention"] == pytest.approx(0.1)
    assert summary["total_gen_tokens"] == 6 and summary["avg_speed"] == pytest.approx(6 / 4.0)
