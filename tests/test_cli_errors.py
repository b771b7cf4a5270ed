"""train_vllm.py for a person: a fast `--help`, one-line errors that name the culprit, no secret echoed, and
a failed resume that loses nothing. Every case here stops before the student loads, so none needs a model."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from alphazero_llm.config import load_config
from alphazero_llm.models.teacher_client import NoTeacherAvailable
from alphazero_llm.training.checkpoint import (
    CheckpointState,
    SamplerState,
    capture_rng,
    save_checkpoint,
    select_checkpoint,
)
from alphazero_llm.training.cli import main
from alphazero_llm.training.sources import MCTSSource

REPO_ROOT = Path(__file__).resolve().parents[1]
MINI = REPO_ROOT / "tests" / "fixtures" / "gsm8k_mini"
SECRET = "sk-test-TYPEDSECRET123"
HEAVY = ("torch", "transformers", "bitsandbytes", "peft", "openai")


def imported_modules(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run train_vllm.py with `-X importtime`; the top-level packages it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "train_vllm.py", *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return proc, names


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--num-examples", "0"],
        ["--engine", "sglang"],
        ["--teacher", f"name=x,base_url=http://127.0.0.1:9/v1,model=m,api_key={SECRET}"],
        ["--config", "config/training.yaml"],
    ],
)
def test_help_and_usage_errors_import_nothing_heavy(argv: list[str]) -> None:
    proc, names = imported_modules(*argv)
    assert proc.returncode == (0 if argv == ["--help"] else 2), proc.stderr[-2000:]
    assert names, "no -X importtime lines: the check would pass vacuously"
    assert "alphazero_llm" in names
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    assert SECRET not in proc.stderr + proc.stdout


def error_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """main(argv)'s exit code and its stderr, minus log lines (which go through logging)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " WARNING " not in line and " INFO " not in line]
    return code, "\n".join(lines)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, err  # argparse adds a usage line; ours add "(--debug shows the traceback)"
    for needle in needles:
        assert needle in err, (needle, err)
    assert SECRET not in err


def test_config_given_a_file_says_it_takes_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = error_of(capsys, ["--config", str(REPO_ROOT / "config" / "training.yaml")])
    assert_one_line_error(code, err, "training.yaml: a file", "takes the directory", f"--config {REPO_ROOT / 'config'}")
    code, err = error_of(capsys, ["--config", "/no/such/config"])
    assert_one_line_error(code, err, "/no/such/config: no such directory")


def test_a_checkpoint_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = tmp_path / "not_a_dir"
    file.write_text("x")
    code, err = error_of(capsys, ["--checkpoint-dir", str(file), "--reference-teacher", "only"])
    assert_one_line_error(code, err, f"--checkpoint-dir {file}: exists and is not a directory")
    assert file.read_text() == "x"


@pytest.mark.parametrize(
    ("student", "needle"),
    [
        ("/no/such/dir", "--student /no/such/dir: no such file or directory"),
        ("./missing.gguf", "--student ./missing.gguf: no such file or directory"),
        ("not a hub id!", "not a directory, a file or a valid hub id"),
    ],
)
def test_a_bad_student_is_named_before_anything_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, student: str, needle: str
) -> None:
    argv = ["--student", student, "--checkpoint-dir", str(tmp_path / "run"), "--reference-teacher", "only"]
    code, err = error_of(capsys, argv)
    assert_one_line_error(code, err, needle)


def test_a_malformed_teacher_spec_never_echoes_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    for spec in (f"name=x,{SECRET}", f"name=x,base_url=http://127.0.0.1:9/v1,model=m,api_key={SECRET}"):
        code, err = error_of(capsys, ["--teacher", spec])
        assert code == 2
        assert "--teacher" in err and SECRET not in err


def test_a_missing_teacher_key_is_reported_before_the_student_loads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMOTE_TEACHER_KEY", raising=False)
    spec = "name=remote,base_url=https://api.example.com/v1,model=m,api_key_env=REMOTE_TEACHER_KEY"
    argv = [
        "--teacher",
        spec,
        "--checkpoint-dir",
        str(tmp_path / "run"),
        "--dataset-path",
        str(MINI),
        "--dev-size",
        "2",
    ]
    code, err = error_of(capsys, argv)
    assert_one_line_error(code, err, "teacher 'remote'", "set the environment variable REMOTE_TEACHER_KEY")


def test_a_dataset_without_its_test_split(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text((MINI / "train.jsonl").read_text())
    argv = [
        "--dataset-path",
        str(data),
        "--dev-size",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "run"),
        "--reference-teacher",
        "only",
    ]
    code, err = error_of(capsys, argv)
    assert_one_line_error(code, err, str(data / "test.jsonl"))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    file = tmp_path / "not_a_dir"
    file.write_text("x")
    with pytest.raises(RuntimeError, match="exists and is not a directory"):
        main(["--checkpoint-dir", str(file), "--reference-teacher", "only", "--debug"])


# --- resume: fall back, or stop, and lose nothing --------------------------------------------------------


class TinyAdapter:
    def save_adapter(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True)
        save_file({"w": torch.zeros(2)}, str(directory / "adapter_model.safetensors"))


def write_checkpoints(root: Path, steps: list[int]) -> None:
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for step in steps:
        state = CheckpointState(
            step=step, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=capture_rng(rng),
            sampler=SamplerState(epoch=0, index=step, order=tuple(range(6))),
            metrics=tuple({"step": s} for s in range(1, step + 1)),
        )  # fmt: skip
        save_checkpoint(root, state, TinyAdapter(), keep_last=None)
    (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, steps[-1] + 2)))


def corrupt(checkpoint: Path) -> None:
    path = checkpoint / "trainer_state.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_corrupt_newest_checkpoint_falls_back_to_the_newest_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_checkpoints(tmp_path, [1, 2, 3])
    corrupt(tmp_path / "checkpoint-3")
    before = snapshot(tmp_path)
    with caplog.at_level(logging.WARNING):
        selection = select_checkpoint(tmp_path)
    assert selection.chosen == tmp_path / "checkpoint-2" and selection.state is not None
    assert selection.state.step == 2
    assert [p.name for p, _ in selection.rejected] == ["checkpoint-3"]
    assert "checkpoint-3" in caplog.text and "resuming from checkpoint-2" in caplog.text
    assert snapshot(tmp_path) == before  # selecting reads only


def test_resume_with_no_good_checkpoint_stops_and_rewrites_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    write_checkpoints(run, [1, 2])
    for step in (1, 2):
        corrupt(run / f"checkpoint-{step}")
    before = snapshot(run)
    argv = ["--resume", "--checkpoint-dir", str(run), "--dataset-path", str(MINI), "--dev-size", "2"]
    argv += ["--reference-teacher", "only"]
    code, err = error_of(capsys, argv)
    assert_one_line_error(code, err, "no good checkpoint", "checkpoint-2", "checkpoint-1", "--fresh-if-no-checkpoint")
    assert snapshot(run) == before  # metrics.jsonl included: nothing lost


def test_resume_with_nothing_to_resume(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--resume", "--checkpoint-dir", str(tmp_path / "empty"), "--dataset-path", str(MINI), "--dev-size", "2"]
    code, err = error_of(capsys, [*argv, "--reference-teacher", "only"])
    assert_one_line_error(code, err, "no checkpoint in", "run without --resume")


def test_resume_past_num_examples_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_checkpoints(run, [3])
    before = snapshot(run)
    argv = [
        "--resume",
        "--num-examples",
        "2",
        "--checkpoint-dir",
        str(run),
        "--dataset-path",
        str(MINI),
        "--dev-size",
        "2",
    ]
    code, err = error_of(capsys, [*argv, "--reference-teacher", "only"])
    assert_one_line_error(code, err, "checkpoint-3 is at example 3", "--num-examples is 2", "larger --num-examples")
    assert snapshot(run) == before


def test_fresh_if_no_checkpoint_needs_resume(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = error_of(capsys, ["--fresh-if-no-checkpoint"])
    assert code == 2 and "only applies with --resume" in err


# --- teachers: all out stops the run ---------------------------------------------------------------------


class Roster:
    """The LLM teachers as MCTSSource reads them: names, totals, and who is out."""

    def __init__(self, names: tuple[str, ...], out: dict[str, str]) -> None:
        self.names, self.out = names, out
        self.accounting = SimpleNamespace(metrics=dict)

    def out_of_run(self) -> dict[str, str]:
        return dict(self.out)


def source_with(roster: Roster, continue_without_teachers: bool = False) -> MCTSSource:
    config = load_config().training
    return MCTSSource(
        loop=None, make_policy=None, teachers=None, terminal=None, mcts=config.mcts, rewards=config.rewards,
        llm_teachers=roster, continue_without_teachers=continue_without_teachers,
    )  # type: ignore[arg-type]  # fmt: skip


def test_every_teacher_out_stops_unless_told_to_continue() -> None:
    some = source_with(Roster(("a", "b"), {"a": "HTTP 401: bad key"}))
    assert some._teachers_out() == {"a": "HTTP 401: bad key"}  # one left: carry on, and record it
    out = {"a": "HTTP 401: bad key", "b": "3 failed requests in a row, the last: connection refused"}
    with pytest.raises(NoTeacherAvailable, match=r"a: HTTP 401: bad key; b: 3 failed requests") as info:
        source_with(Roster(("a", "b"), out))._teachers_out()
    assert "--continue-without-teachers" in str(info.value) and "--resume" in str(info.value)
    assert source_with(Roster(("a", "b"), out), continue_without_teachers=True)._teachers_out() == out


# --- under torchrun: the failure summary names the error --------------------------------------------------


def test_under_torchrun_a_rank_writes_its_error_for_the_launcher(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun prints each failed rank's error file in its summary: a user error and a bug both write it, in the
    format of torch's `@record`, with secrets masked as on stderr."""
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    file = tmp_path / f"run-{SECRET}"
    file.write_text("x")
    code, err = error_of(capsys, ["--checkpoint-dir", str(file), "--reference-teacher", "only"])
    assert_one_line_error(code, err, "exists and is not a directory")
    message = json.loads(error_file.read_text())["message"]
    assert message["message"].startswith("UserError: --checkpoint-dir ")
    assert "exists and is not a directory" in message["message"]
    assert SECRET not in error_file.read_text() and SECRET not in err
    assert "preflight" in message["extraInfo"]["py_callstack"]  # where it was raised

    error_file.unlink()

    def a_bug(settings: object) -> int:
        raise RuntimeError("a bug in the run")

    monkeypatch.setattr("alphazero_llm.training.run.run", a_bug)
    with pytest.raises(RuntimeError, match="a bug in the run"):
        main(["--checkpoint-dir", str(tmp_path / "run"), "--reference-teacher", "only"])
    message = json.loads(error_file.read_text())["message"]
    assert message["message"] == "RuntimeError: a bug in the run"
    assert "in a_bug" in message["extraInfo"]["py_callstack"]
