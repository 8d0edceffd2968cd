import pytest

from lorank.errors import ConfigError
from lorank.train.config import TrainConfig


def _cfg(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("value,expected", [(100, [100]), ("10,25, 50", [10, 25, 50]), ([5, 7], [5, 7])])
def test_checkpoint_steps_accept_an_int_a_string_or_a_list(tmp_path, value, expected):
    cfg = TrainConfig.from_yaml(_cfg(tmp_path, "data: [{kind: trec, path: dl20}]\n"), {"checkpoints.steps": value})
    assert cfg.checkpoints.steps == expected


def test_bad_checkpoint_steps_and_yaml_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="comma-separated integers"):
        TrainConfig.from_yaml(_cfg(tmp_path, "data: [{kind: trec, path: dl20}]\ncheckpoints: {steps: 'a,b'}\n"))
    with pytest.raises(ConfigError, match="line 2"):
        TrainConfig.from_yaml(_cfg(tmp_path, "data: [\n  : : :\n"))
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t.jsonl").write_text("")
    sub = tmp_path / "configs"
    sub.mkdir()
    cfg = TrainConfig.from_yaml(_cfg(sub, "data: [{kind: tevatron, path: ../d/t.jsonl}]\n"))
    assert cfg.data[0].path == str(sub / "../d/t.jsonl")


def test_set_override_indexes_into_the_list_of_sources(tmp_path):
    import pytest

    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig

    p = tmp_path / "c.yaml"
    p.write_text("data: [{kind: trec, path: dl20}, {kind: msmarco, path: m, mine: {window: 10-100}}]\n")
    cfg = TrainConfig.from_yaml(p, {"data.1.max_queries": 4, "data.1.mine.window": "5-50"})
    assert cfg.data[1].max_queries == 4 and cfg.data[1].mine.window == "5-50" and cfg.data[0].max_queries is None
    for bad in ("data.2.max_queries", "data.x.max_queries"):
        with pytest.raises(ConfigError, match="has 2 entries"):
            TrainConfig.from_yaml(p, {bad: 1})


def test_unknown_fields_name_their_yaml_line_and_the_field_meant(tmp_path):
    """An unknown key says where it is written and which field it most looks like (from other tools' names too)."""
    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig

    path = tmp_path / "bad.yaml"
    path.write_text("model: smollm2-135m\nlearning_rate: 1e-4\ndata:\n  - kind: trec\n    path: dl20\n"
                    "    dept: 50\nlora: {rank: 8, lora_alpha: 16}\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(path)
    problems = sorted(info.value.problems)
    assert problems == [
        "data.0.dept: unknown field; did you mean 'depth'? (line 6)",
        "learning_rate: unknown field; did you mean 'lr'? (line 2)",
        "lora.lora_alpha: unknown field; did you mean 'alpha'? (line 7)",
    ]
    assert str(path) in str(info.value)


def test_unknown_field_without_a_close_name_lists_the_known_ones():
    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig

    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"model": "m", "data": [{"path": "dl20"}], "output_dir": "o", "lora": {"zzz": 1}})
    (problem,) = info.value.problems
    assert problem.startswith("lora.zzz: unknown field; known fields here: ") and "rank" in problem


@pytest.mark.parametrize("fields, problem", [
    ({"max_steps": 0}, "max_steps: 0 trains nothing"),
    ({"max_steps": -5}, "max_steps: -5 trains nothing"),
    ({"epochs": 0}, "epochs: 0.0 trains nothing"),
])
def test_a_config_that_trains_nothing_is_refused(fields, problem):
    """max_steps: 0 used to train one step at lr 0 and save checkpoint-1."""
    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig

    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"model": "m", "data": [{"path": "dl20"}], "output_dir": "o", **fields})
    assert any(problem in p for p in info.value.problems), info.value.problems
