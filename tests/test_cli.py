"""train_vllm.py's command line: the seed's flags, config defaults, and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.training.cli import build_parser, main
from alphazero_llm.training.settings import RunSettings, settle

CONFIG = load_config()


def test_flags_with_a_config_key_default_to_not_given():
    """None: "not given", so that `settle` alone lays flags over the config (tested below)."""
    args = build_parser(CONFIG).parse_args([])
    for flag in ("num_examples", "save_every", "eval_size", "log_interval", "checkpoint_dir", "seed", "tier",
                 "report_to", "keep_last", "dataset_path", "student", "rollout", "eval_split", "dev_size"):  # fmt: skip
        assert getattr(args, flag) is None, flag
    assert not args.local_teacher and args.teacher == []
    s = settle(args, CONFIG, "cuda", env={})
    run = CONFIG.training.run
    assert (s.training.run.log_interval, s.training.run.checkpoint_dir) == (run.log_interval, run.checkpoint_dir)
    assert (s.training.seed, s.training.run.keep_last) == (CONFIG.training.seed, run.keep_last)


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser(CONFIG).parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--num-examples", "--checkpoint-dir", "--save-every", "--log-interval", "--use-grpo", "--use-legacy",
        "--config", "--resume", "--eval-size", "--seed", "--tier", "--student", "--device", "--report-to",
        "--teacher", "--local-teacher", "--reference-teacher", "--dataset-path", "--engine", "--keep-last",
        "--rollout", "--no-rollout", "--eval-split", "--dev-size",
    ):  # fmt: skip
        assert flag in text


def test_grpo_and_legacy_conflict(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser(CONFIG).parse_args(["--use-grpo", "--use-legacy"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_extra_teacher_from_the_command_line(capsys: pytest.CaptureFixture[str]):
    args = build_parser(CONFIG).parse_args(
        ["--teacher", "name=local,base_url=http://127.0.0.1:8000/v1,model=m,api_key_env=LOCAL_KEY"]
    )
    (teacher,) = args.teacher
    assert (teacher.name, teacher.provider, teacher.api_key_env) == ("local", "127.0.0.1", "LOCAL_KEY")
    with pytest.raises(SystemExit):
        build_parser(CONFIG).parse_args(["--teacher", "name=x,api_key=sk-test-SECRET"])
    err = capsys.readouterr().err
    assert "api_key_env" in err and "sk-test-SECRET" not in err


def settings_for(argv: list[str], device: str = "cpu", env: dict[str, str] | None = None) -> RunSettings:
    return settle(build_parser(CONFIG).parse_args(argv), CONFIG, device, env={} if env is None else env)


def test_cpu_defaults_keep_the_run_small():
    cpu = CONFIG.training_on_cpu
    s = settings_for([])
    assert s.training == cpu  # no flag: training.yaml with its cpu section laid over it
    assert (cpu.run.num_examples, cpu.run.save_every, cpu.dataset.num_eval_examples) == (4, 2, 4)
    assert cpu.mcts.num_iterations < CONFIG.training.mcts.num_iterations
    assert cpu.mcts.selection == CONFIG.training.mcts.selection  # the rest of the search config is kept
    assert s.student == CONFIG.models.student.cpu_name and s.device == "cpu"


def test_cuda_uses_the_full_config():
    s = settings_for([], device="cuda", env={"OPENROUTER_API_KEY": "sk-test-SECRET"})
    assert s.training == CONFIG.training
    assert s.student == CONFIG.models.student.name


def test_explicit_flags_win_over_cpu_defaults(tmp_path):
    s = settings_for(
        ["--num-examples", "7", "--save-every", "3", "--eval-size", "0", "--checkpoint-dir", str(tmp_path),
         "--use-legacy", "--seed", "5", "--student", "some/model", "--dataset-path", "data", "--resume",
         "--log-interval", "2", "--report-to", "tensorboard", "--keep-last", "0", "--no-rollout"]
    )  # fmt: skip
    run = s.training.run
    assert (run.num_examples, run.save_every, s.training.dataset.num_eval_examples) == (7, 3, 0)
    assert (s.checkpoint_dir, run.loss, s.training.seed, run.log_interval) == (tmp_path, "legacy", 5, 2)
    assert (s.student, s.training.dataset.path, s.resume, run.report_to) == ("some/model", "data", True, "tensorboard")
    assert run.keep_last == 0 and not s.training.mcts.rollout
    assert s.training.mcts == dataclasses.replace(CONFIG.training_on_cpu.mcts, rollout=False)  # the rest: the config's
    assert settings_for(["--use-grpo"]).training.run.loss == "grpo"
    assert settings_for([]).training.run.loss == CONFIG.training.run.loss


def test_settle_is_pure():
    """The same flags give the same settings, and the config passed in is not changed."""
    before = dataclasses.asdict(CONFIG)
    assert settings_for(["--num-examples", "3"]) == settings_for(["--num-examples", "3"])
    assert dataclasses.asdict(CONFIG) == before


def test_checkpoint_dir_reaches_the_run_as_a_path():
    assert settings_for(["--checkpoint-dir", "out/x"]).checkpoint_dir == Path("out/x")


def test_teacher_choice():
    key_env = CONFIG.teachers.tier(CONFIG.teachers.default_tier)[0].api_key_env
    no_key = settings_for([]).teachers
    assert no_key.local and "no --teacher" in no_key.reason and key_env in no_key.reason
    with_key = settings_for([], env={key_env: "sk-test-SECRET"}).teachers
    assert not with_key.local and with_key.tier == CONFIG.teachers.default_tier
    assert "sk-test-SECRET" not in repr(with_key)
    forced = settings_for(["--local-teacher"], env={key_env: "sk-test-SECRET"}).teachers
    assert forced.local and forced.tier is None
    spec = "name=mine,base_url=http://127.0.0.1:9/v1,model=m,api_key_env=MINE"
    extra_only = settings_for(["--teacher", spec]).teachers
    assert not extra_only.local and extra_only.tier is None and [t.name for t in extra_only.extra] == ["mine"]
    both = settings_for(["--teacher", spec], env={key_env: "k"}).teachers
    assert both.tier == CONFIG.teachers.default_tier and len(both.extra) == 1


def test_reference_teacher_choice(capsys: pytest.CaptureFixture[str]):
    key_env = CONFIG.teachers.tier(CONFIG.teachers.default_tier)[0].api_key_env
    assert not settings_for([]).teachers.reference
    only = settings_for(["--reference-teacher", "only"]).teachers
    assert only.reference and not only.uses_llm and not only.local
    also = settings_for(["--reference-teacher", "also"], env={key_env: "k"}).teachers
    assert also.reference and also.tier == CONFIG.teachers.default_tier
    also_local = settings_for(["--reference-teacher", "also"]).teachers  # no key: the local server teaches too
    assert also_local.reference and also_local.local
    assert "leaves no room for --local-teacher" in usage_error(
        ["--reference-teacher", "only", "--local-teacher"], capsys
    )


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """main(argv) must stop with argparse's usage code, 2; its stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    return capsys.readouterr().err


def test_bad_values_are_usage_errors(capsys: pytest.CaptureFixture[str]):
    assert "--save-every must be positive" in usage_error(["--save-every", "0"], capsys)
    assert "--eval-size must be >= -1" in usage_error(["--eval-size", "-2"], capsys)
    assert "--keep-last must be >= 0" in usage_error(["--keep-last", "-1"], capsys)


def test_source_and_dataset_flags():
    """--source picks the trajectory source; sft takes the legacy loss; the baselines ask no teacher."""
    assert settings_for(["--device", "cpu"]).training.run.source == "mcts"
    sample = settings_for(["--source", "sample", "--dataset", "svamp"])
    assert sample.training.run.source == "sample" and sample.training.dataset.kind == "svamp"
    assert not sample.teachers.uses_llm and not sample.teachers.reference
    sft = settings_for(["--source", "sft"])
    assert sft.training.run.loss == "legacy" and not sft.teachers.uses_llm
    with pytest.raises(ValueError, match="GRPO advantage is 0"):
        settings_for(["--source", "sft", "--use-grpo"])
    with pytest.raises(ValueError, match="asks no teacher"):
        settings_for(["--source", "sample", "--reference-teacher", "only"])
    with pytest.raises(ValueError, match="SVAMP's split is fixed"):
        settings_for(["--dataset", "svamp", "--dev-size", "10"])
