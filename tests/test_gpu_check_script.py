"""scripts/gpu_check.py (``make gpu-check``): its CPU ``--smoke`` dry run, budgets, forced failures,
the no-accelerator exit, the wheel install the device machine needs, and the carry size."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.distributed.helpers import script_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
PARTS = ["main_job", "precision_auto", "throughput_cifar", "decode_resnet50", "main_job_3x"]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300):
    env = dict(env or script_env())
    env.pop("OUT", None)
    env.pop("GPU_CHECK_FAIL", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_smoke_runs_every_part_and_goes_on_after_a_failed_one(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = _run(["--smoke", "--fail", "decode_resnet50", "--out", str(out)], timeout=540)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert list(s["parts"]) == PARTS and s["ok"] is False and s["smoke"] is True
    assert s["dali"].startswith("not measured")
    assert "gpu_check on" in proc.stdout  # the printed summary
    parts = s["parts"]
    # the main job and its optional 3x run: kNN next to pixels and the untrained network
    main, triple = parts["main_job"], parts["main_job_3x"]
    for part, epochs in ((main, 1), (triple, 3)):
        assert part["status"] == "ok", part.get("error")
        assert part["epochs_requested"] == epochs == part["epochs_logged"]
        assert part["stopped_by_max_time"] is False and part["wall_s"] > 0
        m = part["metrics"]
        for key in (
            "knn/top1",
            "knn/pixel_top1",
            "knn/random_init_top1",
            "knn/random_init_backbone_top1",
        ):
            assert 0.0 <= m[key] <= 100.0, (key, m)
        untrained = max(m["knn/random_init_top1"], m["knn/random_init_backbone_top1"])
        assert part["learned_minus_pixels"] == pytest.approx(
            m["knn/top1"] - m["knn/pixel_top1"], abs=0.01
        )
        assert part["learned_minus_best_untrained"] == pytest.approx(
            m["knn/top1"] - untrained, abs=0.01
        )
        # precision auto, decided for this CPU (the same rules are tested with injected facts)
        choice = part["device_choice"]
        assert choice["precision"]["requested"] == "auto" and choice["precision"]["reason"]
        bf16 = choice["precision"]["value"] == "bf16-mixed"
        assert any("bfloat16" in line for line in part["lightning_lines"]) == bf16
    # what auto chose against an explicit bf16-mixed run: both step times measured
    precision = parts["precision_auto"]
    assert precision["status"] == "ok", precision.get("error")
    assert precision["auto_choice"] == main["device_choice"]
    assert precision["runs"]["bf16_mixed"]["device_choice"]["precision"] == {
        "value": "bf16-mixed",
        "requested": "bf16-mixed",
        "reason": "set explicitly",
    }
    auto_s, bf16_s = (precision["runs"][k]["step_s"] for k in ("auto", "bf16_mixed"))
    assert auto_s > 0 and bf16_s > 0
    assert precision["auto_over_bf16_step"] == pytest.approx(auto_s / bf16_s, abs=1e-3)
    assert "precision_auto" in proc.stdout and "vs bf16-mixed" in proc.stdout
    assert "trainer.max_epochs=3" in triple["command"]
    # throughput: NPID+CLD 2 views and MoCo+CLD 3 crops, model-only vs the two loops
    cifar = parts["throughput_cifar"]
    assert cifar["status"] == "ok", cifar.get("error")
    assert [(r["method"], r["mode"]) for r in cifar["table"]] == [
        (m, mode) for m in ("npid", "moco") for mode in ("model_only", "gpu", "loader")
    ]
    for r in cifar["runs"]:
        assert r["images_per_s"] > 0 and r["finite"] and r["precision"] == "bf16-mixed", r
        assert r["views"] == (3 if r["method"] == "moco" else 2)
        # smoke profiles every loop mode (the real check: only those below 0.9x model-only)
        assert ("profile" in r) == (r["mode"] != "model_only")
        assert r["vs_model_only"] == 1.0 if r["mode"] == "model_only" else r["vs_model_only"] > 0
    # the sabotaged part (an unknown precision): every run's error recorded, and the 3x run
    # after it still ran
    jpeg = parts["decode_resnet50"]
    assert jpeg["status"] == "failed" and "gpu_check_forced_failure" in jpeg["error"]
    assert [(r["mode"], r["decoder"]) for r in jpeg["table"]] == [
        ("model_only", "none"),
        ("torchvision", "torchvision"),
        ("gpu", "pil"),
        ("loader", "pil"),
    ]
    assert all("gpu_check_forced_failure" in r["error"] for r in jpeg["table"])


def test_a_failed_main_job_is_recorded_and_leaves_the_3x_run_skipped(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = _run(
        ["--smoke", "--fail", "main_job", "--parts", "main_job,main_job_3x"] + ["--out", str(out)]
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert list(s["parts"]) == PARTS and s["ok"] is False
    main = s["parts"]["main_job"]
    # a real failing cld-train (no such trainer config), with its error and output tail
    assert main["status"] == "failed" and main["error"].startswith("exit status")
    assert "gpu_check_forced_failure" in "\n".join(main["output_tail"])
    # the optional 3x run is sized from the main job's wall time, which is missing here
    triple = s["parts"]["main_job_3x"]
    assert triple["status"] == "skipped" and "main_job" in triple["reason"]
    for name in ("precision_auto", "throughput_cifar", "decode_resnet50"):
        assert s["parts"][name] == {"status": "skipped", "reason": "not selected (--parts)"}


def test_a_part_over_its_budget_is_ended_and_recorded_as_timeout(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    t0 = time.perf_counter()
    proc = _run(["--smoke", "--parts", "main_job", "--budget", "main_job=2", "--out", str(out)])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    main = json.loads(out.read_text())["parts"]["main_job"]
    assert main["status"] == "timeout" and main["error"] == "timed out after 2 s"
    assert main["budget_s"] == 2 and main["wall_s"] < 20
    assert time.perf_counter() - t0 < 120


def test_without_cuda_the_real_check_says_no_accelerator_and_exits_2(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**script_env(), "CUDA_VISIBLE_DEVICES": ""}
    proc = _run(["--out", str(out)], env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gpu_check: no accelerator" in proc.stderr
    assert not out.exists()


def test_a_zero_budget_skips_every_part(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    rc = _load_script().main(["--smoke", "--budget-s", "0", "--out", str(out)])
    s = json.loads(out.read_text())
    assert rc == 0 and s["ok"] is True and list(s["parts"]) == PARTS
    for part in s["parts"].values():
        assert part["status"] == "skipped" and part["reason"].startswith("time budget"), part


def test_the_optional_3x_run_is_planned_from_the_main_job_wall_time() -> None:
    plan = _load_script().plan_optional
    assert plan(300.0, 100.0)[0] is True
    go, why = plan(299.0, 100.0)
    assert go is False and "needs ~300 s" in why and "--parts main_job_3x" in why
    assert plan(1000.0, None)[0] is False


def test_unknown_parts_are_rejected() -> None:
    with pytest.raises(SystemExit):
        _load_script().main(["--smoke", "--parts", "main_job,benchmark"])


def test_carry_size_counts_the_tree_and_the_carried_folders(tmp_path) -> None:
    mod = _load_script()
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob").write_bytes(b"x" * 1000)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/big/\n")
    (tmp_path / "a.txt").write_text("hello")
    sizes = mod.carry_sizes(tmp_path, ("big", "absent"))
    assert sizes["working_tree_bytes"] == len("hello") + len("/big/\n")
    assert sizes["carried_bytes"] == {"big": 1000, "absent": None}
    assert sizes["total_bytes"] == 1011 and sizes["fits"] is True
    assert sizes["limit_bytes"] == 64 * 2**20


@pytest.mark.skipif(
    not list((ROOT / ".whl").glob("hydra_core-*.whl")),
    reason="no .whl/ wheels here (`make gpu-wheels` fetches them; CI has none)",
)
def test_the_device_install_of_the_carried_wheels(tmp_path) -> None:
    """hydra, omegaconf and antlr4 hidden as on the device machine: the check installs .whl/ into
    GPU_CHECK_SITE and the main job runs on those wheels."""
    hide = tmp_path / "hide"
    for mod in ("hydra", "omegaconf", "antlr4"):
        (hide / mod).mkdir(parents=True)
        (hide / mod / "__init__.py").write_text(f"raise ImportError('{mod} hidden')\n")
    env = script_env()
    env["PYTHONPATH"] = f"{hide}:{env['PYTHONPATH']}"
    env["GPU_CHECK_SITE"] = str(tmp_path / "site")
    out = tmp_path / "gpu_check.json"
    proc = _run(["--smoke", "--parts", "main_job", "--out", str(out)], env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["setup"]["site"] == str(tmp_path / "site")
    assert any(w.startswith("hydra_core-") for w in s["setup"]["wheels"])
    assert s["parts"]["main_job"]["status"] == "ok"
