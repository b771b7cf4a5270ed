"""train_vllm.py's command line: the seed's flags, config defaults, and clear errors."""

from __future__ import annotations

import pytest

from alphazero_llm.config import load_config
from alphazero_llm.training.cli import build_parser, main

CONFIG = load_config()


def test_defaults_come_from_training_yaml():
    args = build_parser(CONFIG).parse_args([])
    run = CONFIG.training.run
    assert (args.num_examples, args.save_every, args.log_interval) == (
        run.num_examples,
        run.save_every,
        run.log_interval,
    )
    assert args.eval_size == CONFIG.training.dataset.num_eval_examples
    assert args.tier == CONFIG.teachers.default_tier
    assert args.teacher == []


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser(CONFIG).parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--num-examples", "--checkpoint-dir", "--save-every", "--log-interval", "--use-grpo", "--use-legacy",
        "--config", "--resume", "--eval-size", "--seed", "--tier", "--student", "--device", "--report-to",
        "--teacher",
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


def test_training_is_not_claimed(caplog: pytest.LogCaptureFixture):
    assert main(["--num-examples", "2"]) == 2
    assert "not implemented yet" in caplog.text
    with pytest.raises(SystemExit, match="--save-every must be positive"):
        main(["--save-every", "0"])
