"""What bench-schedulers and demo print: platform, control, placement, headroom, verdicts."""
from aios_lab.bench.control import ControlResult
from aios_lab.bench.summary import format_summary, summarise
from aios_lab.bench.verdict import judge


def _result(control: ControlResult | None):
    runs = []
    for sched, ms, mig, wc in (("eevdf", [34.8, 33.1, 35.7], 470, 1.35), ("mllb-model", [34.4, 31.7, 37.3], 439, 2.25),
                               ("mllb-stay", [35.9, 32.6, 38.9], 0, 8.0)):
        for m in ms:
            runs.append({"scheduler": sched, "makespan_s": m, "migrate": mig, "switch": 1, "wc_loss_s": wc,
                         "wc_fraction": wc / (2 * m), "wait_p50_ns": 4e4, "wait_p99_ns": 5e6})
    labels = ["eevdf", "mllb-model", "mllb-stay"]
    ctl = control.to_dict() if control else None
    return {"workload": {"name": "build", "summary": "make"}, "kernel": "7.3.4", "cpus": 2, "repeat": 3,
            "platform": {"vm": True, "accel": "tcg", "tcg": "multi", "qemu": "10.0.2", "host_rt": True,
                         "host_nice": None, "topology": {"sockets": 1, "numa_nodes": 1}},
            "control": ctl, "runs": runs, "summary": summarise(runs, labels),
            "verdicts": judge(runs, labels, "eevdf", ctl)}


def test_a_judged_run_prints_platform_control_headroom_and_targets():
    text = format_summary(_result(ControlResult(2, 60000, [3.4, 3.4], [1.6, 1.6])))
    assert "QEMU 10.0.2 tcg multi-threaded (QEMU at SCHED_RR on the host)" in text
    assert "placement control" in text and "ratio x2.12" in text and "CANNOT JUDGE" not in text
    assert "headroom: eevdf left 1.9 % of CPU time idle" in text
    assert "target [MISSED] mllb-model: makespan at least 5 % shorter" in text
    assert "wc-loss" in text


def test_a_blind_platform_marks_every_target_not_judged():
    text = format_summary(_result(ControlResult(2, 60000, [3.0, 3.0], [2.9, 2.9])))
    assert "CANNOT JUDGE LOAD BALANCING" in text and "[MISSED]" not in text and "[NOT JUDGED]" in text
