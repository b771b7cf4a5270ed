"""Config: the shipped defaults hold the documented values; bad files fail naming file and key."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml

import alphazero_llm
from alphazero_llm.config import (
    MODELS_FILE,
    TEACHERS_FILE,
    TRAINING_FILE,
    ConfigError,
    default_config_dir,
    load_config,
    override,
)

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_defaults_are_read_through_the_package():
    shipped = Path(str(default_config_dir()))
    assert shipped.parent == Path(alphazero_llm.__file__).parent
    for name in (MODELS_FILE, TEACHERS_FILE, TRAINING_FILE):
        assert (shipped / name).is_file()


def test_repo_config_dir_is_what_the_package_ships():
    # config/ at the top level links to the package's defaults: one copy, in the repo and the wheel.
    assert REPO_CONFIG.resolve() == (REPO_CONFIG.parent / "src" / "alphazero_llm" / "defaults").resolve()
    shipped = Path(str(default_config_dir()))
    for name in (MODELS_FILE, TEACHERS_FILE, TRAINING_FILE):
        assert (REPO_CONFIG / name).read_text() == (shipped / name).read_text()


def test_default_values_match_the_design():
    cfg = load_config()
    mcts = cfg.training.mcts
    assert mcts.num_iterations == 60
    assert mcts.exploration_constant == pytest.approx(math.sqrt(2))
    assert mcts.max_depth == 12
    assert mcts.tokens_per_expansion == 20
    assert (mcts.num_right, mcts.num_wrong) == (10, 10)
    env = cfg.training.environment  # the rubric: the seed's weights
    assert (env.hre_weight, env.pre_weight) == (0.4, 0.6)
    rewards = cfg.training.rewards  # the search's leaf value: reaching the gold answer outweighs the rest
    assert rewards.hre_weight > 2 * rewards.pre_weight and rewards.pre_discount == 0.95
    assert (rewards.length_penalty, rewards.direction_bonus, rewards.format_bonus) == (0.0, 0.0, 0.0)
    assert mcts.rollout and mcts.rollout_tokens == 256
    assert (cfg.training.evaluation.split, cfg.training.evaluation.max_new_tokens) == ("dev", 512)
    assert cfg.training.grpo.advantage_clip == 3.0
    assert cfg.training.grpo.beta > 0
    assert cfg.training.legacy.kl_weight >= 0
    lora = cfg.models.lora
    assert (lora.r, lora.alpha) == (32, 32)
    assert set(lora.target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    }  # fmt: skip
    assert (cfg.training.dataset.num_train_examples, cfg.training.dataset.num_eval_examples) == (50, 20)
    assert set(cfg.teachers.tiers) == {"free", "production"}
    assert all(t.api_key_env for tier in cfg.teachers.tiers.values() for t in tier)
    assert "nemotron" in cfg.teachers.terminal_checker.model.model
    assert cfg.models.student.trust_remote_code is False


def test_no_key_values_in_teacher_config():
    text = (Path(str(default_config_dir())) / TEACHERS_FILE).read_text()
    assert "sk-" not in text
    assert "api_key:" not in text  # only the *name* of the variable (api_key_env)


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    for name in (MODELS_FILE, TEACHERS_FILE, TRAINING_FILE):
        shutil.copy(Path(str(default_config_dir())) / name, tmp_path / name)
    return tmp_path


def edit(directory: Path, name: str, change) -> Path:
    path = directory / name
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


def test_copy_loads_identically(config_copy: Path):
    assert load_config(config_copy) == load_config()


def test_unknown_key_names_file_and_key(config_copy: Path):
    path = edit(config_copy, TRAINING_FILE, lambda d: d["mcts"].update(num_iteration=5))
    with pytest.raises(ConfigError) as err:
        load_config(config_copy)
    assert str(path) in str(err.value)
    assert "mcts" in str(err.value) and "num_iteration" in str(err.value)


def test_wrong_type_names_file_and_key(config_copy: Path):
    path = edit(config_copy, TRAINING_FILE, lambda d: d["mcts"].update(num_iterations="sixty"))
    with pytest.raises(ConfigError, match=r"mcts\.num_iterations: expected an integer") as err:
        load_config(config_copy)
    assert str(path) in str(err.value)


def test_bool_is_not_a_number(config_copy: Path):
    edit(config_copy, TRAINING_FILE, lambda d: d["rewards"].update(hre_weight=True))
    with pytest.raises(ConfigError, match=r"rewards\.hre_weight"):
        load_config(config_copy)


def test_integer_is_accepted_for_a_float(config_copy: Path):
    edit(config_copy, TRAINING_FILE, lambda d: d["rewards"].update(hre_weight=1, pre_weight=0))
    rewards = load_config(config_copy).training.rewards
    assert rewards.hre_weight == 1.0 and isinstance(rewards.hre_weight, float)
    assert rewards.pre_weight == 0.0  # an explicit zero stays zero


def test_missing_key(config_copy: Path):
    edit(config_copy, MODELS_FILE, lambda d: d["lora"].pop("r"))
    with pytest.raises(ConfigError, match=r"models\.yaml: lora\.r: missing required key"):
        load_config(config_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpu_memory_utilization": 0}, r"vllm: gpu_memory_utilization must be in \(0, 1\]"),
        ({"gpu_memory_utilization": 1.5}, r"vllm: gpu_memory_utilization must be in \(0, 1\]"),
        ({"quantization": "awq"}, r"vllm\.quantization: expected one of \['bitsandbytes'\]"),
        ({"enforce_eager": "yes"}, r"vllm\.enforce_eager: expected true or false"),
    ],
)
def test_vllm_section_is_validated(config_copy: Path, change: dict, message: str):
    assert load_config(config_copy).models.vllm.quantization is None  # the shipped default: the bf16 base
    edit(config_copy, MODELS_FILE, lambda d: d["vllm"].update(change))
    with pytest.raises(ConfigError, match=message):
        load_config(config_copy)


def test_literal_choice(config_copy: Path):
    edit(config_copy, TRAINING_FILE, lambda d: d["mcts"].update(selection="greedy"))
    with pytest.raises(ConfigError, match=r"mcts\.selection: expected one of \['ucb1', 'puct'\]"):
        load_config(config_copy)


def test_grpo_loss_type_is_one_of_the_normalisations(config_copy: Path):
    assert load_config().training.grpo.loss_type == "dr_grpo"
    edit(config_copy, TRAINING_FILE, lambda d: d["grpo"].update(loss_type="grpo"))
    assert load_config(config_copy).training.grpo.loss_type == "grpo"
    edit(config_copy, TRAINING_FILE, lambda d: d["grpo"].update(loss_type="sum"))
    with pytest.raises(ConfigError, match=r"grpo\.loss_type: expected one of \['grpo', 'bnpo', 'dr_grpo'\]"):
        load_config(config_copy)


def test_out_of_range_value(config_copy: Path):
    edit(config_copy, TRAINING_FILE, lambda d: d["rewards"].update(pre_discount=1.5))
    with pytest.raises(ConfigError, match=r"training\.yaml: rewards: pre_discount must be in \(0, 1\]"):
        load_config(config_copy)


def test_teacher_entry_errors_name_the_index(config_copy: Path):
    edit(config_copy, TEACHERS_FILE, lambda d: d["tiers"]["free"][1].pop("api_key_env"))
    with pytest.raises(ConfigError, match=r"tiers\.free\[1\]\.api_key_env: missing required key"):
        load_config(config_copy)


def test_default_tier_must_exist(config_copy: Path):
    edit(config_copy, TEACHERS_FILE, lambda d: d.update(default_tier="gold"))
    with pytest.raises(ConfigError, match="default_tier 'gold'"):
        load_config(config_copy)


def test_unknown_tier_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown teacher tier 'gold'; valid tiers: \['free', 'production'\]"):
        load_config().teachers.tier("gold")


def test_missing_file_and_bad_yaml(config_copy: Path):
    (config_copy / MODELS_FILE).write_text("lora: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_copy)
    (config_copy / MODELS_FILE).unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_copy)


def test_yaml_tags_are_not_executed(config_copy: Path):
    (config_copy / MODELS_FILE).write_text("student: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_copy)


def test_cpu_overlay_is_checked_as_a_training_config(config_copy: Path):
    config = load_config()
    assert config.training_on_cpu.mcts.num_iterations == 4 != config.training.mcts.num_iterations
    assert config.for_device("cpu").training == config.training_on_cpu
    assert config.for_device("cuda") == config
    edit(config_copy, TRAINING_FILE, lambda d: d["cpu"]["mcts"].update(num_iterations=0))
    with pytest.raises(ConfigError, match=r"cpu overlay.*mcts: num_iterations must be positive"):
        load_config(config_copy)
    edit(config_copy, TRAINING_FILE, lambda d: d["cpu"]["mcts"].update(num_iterations=4, no_such_key=1))
    with pytest.raises(ConfigError, match=r"cpu\.mcts\.no_such_key: not a key"):
        load_config(config_copy)


def test_override_replaces_dotted_keys_and_validates():
    training = load_config().training
    changed = override(training, {"seed": 7, "mcts.num_iterations": 3, "run.loss": None})
    assert (changed.seed, changed.mcts.num_iterations, changed.run.loss) == (7, 3, training.run.loss)
    assert changed.mcts.max_depth == training.mcts.max_depth and training.mcts.num_iterations != 3
    with pytest.raises(ValueError, match="num_iterations must be positive"):
        override(training, {"mcts.num_iterations": 0})
    with pytest.raises(ConfigError, match="no key 'nope'"):
        override(training, {"mcts.nope": 1})
