import pytest

from fedmllm.config import Config, ConfigError, load_config


def test_defaults_and_overrides():
    cfg = load_config(None, ["fl.rounds=20", "fl.clients_per_round=4", "train.lr=1e-3",
                             "lora.layers=[-1]", "model.name=some/model", "seed=7"])
    assert cfg.fl.rounds == 20 and cfg.fl.clients_per_round == 4
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.lora.layers == [-1]
    assert cfg.model.name == "some/model" and cfg.seed == 7
    assert Config().fl.rounds != 20  # defaults untouched


def test_int_widens_to_float_but_not_reverse():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="fl.rounds"):
        load_config(None, ["fl.rounds=2.5"])


@pytest.mark.parametrize("override,key", [
    ("fl.roundz=3", "fl.roundz"),
    ("nope.x=1", "nope"),
    ("fl.rounds=many", "fl.rounds"),
    ("data.scenario=sideways", "data.scenario"),
    ("model.pretrain=3", "model.pretrain"),
    ("fl.rounds", "fl.rounds"),
    ("fl.rounds=-1", "fl.rounds"),
])
def test_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


def test_toml_and_yaml_files(tmp_path):
    t = tmp_path / "exp.toml"
    t.write_text('seed = 3\n[fl]\nrounds = 5\nalgorithm = "fedavg"\n[fl.strategy]\neta = 0.1\n')
    cfg = load_config(t, ["fl.rounds=6"])
    assert (cfg.seed, cfg.fl.rounds, cfg.fl.strategy) == (3, 6, {"eta": 0.1})
    y = tmp_path / "exp.yaml"
    y.write_text("data:\n  scenario: missing\n  missing_rate: 0.3\n")
    cfg = load_config(y)
    assert cfg.data.scenario == "missing" and cfg.data.missing_rate == 0.3
    bad = tmp_path / "bad.toml"
    bad.write_text("[fl]\nrundos = 5\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*fl.rundos"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["fl.rounds=3", "lora.layers=[0, 1]"])
    cfg.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_yaml_exponent_floats(tmp_path):
    y = tmp_path / "exp.yaml"
    y.write_text("train:\n  lr: 1e-3\n")
    assert load_config(y).train.lr == pytest.approx(1e-3)


def test_every_key_is_documented_and_config_show_doc_lists_it(capsys):
    from fedmllm.cli import main
    from fedmllm.config import field_docs

    docs = field_docs()
    flat = []

    def walk(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict) and k not in ("strategy", "params_a", "params_b"):
                walk(v, f"{prefix}{k}.")
            else:
                flat.append(f"{prefix}{k}")

    walk(Config().to_dict())
    assert sorted(docs) == sorted(flat)
    assert all(len(d) > 10 for d in docs.values()), [k for k, d in docs.items() if len(d) <= 10]
    assert main(["config", "show", "--doc", "--format", "markdown", "fl.rounds=7"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| key | type | value | meaning |\n|---|---|---|---|\n")
    assert "| `fl.rounds` | int | `7` | Communication rounds. |" in table
    assert table.count("\n| `") == len(flat)


@pytest.mark.parametrize("width", [80, 50])
def test_config_show_doc_is_by_section_and_fits_the_terminal(capsys, monkeypatch, width):
    """``--doc`` for a terminal: a heading per section, each key once with its value, the
    default where it differs, its type and its doc; no line wider than the terminal."""
    from fedmllm.cli import main
    from fedmllm.config import field_docs

    monkeypatch.setenv("COLUMNS", str(width))  # what shutil.get_terminal_size() reads first
    assert main(["config", "show", "--doc", "fl.rounds=7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= width
    headings = [line for line in lines if line.startswith("[")]
    assert headings[:4] == ["[model]", "[lora]", "[data]", "[fl]"]
    assert {"[fl.client]", "[fl.yoco]", "[train]", "[eval]", "[output]", "[top level]"} <= set(
        headings)
    keys = [line.split()[0] for line in lines if line.startswith("  ") and " = " in line
            and not line.startswith("   ")]
    assert sorted(keys) == sorted(field_docs())
    text = "\n".join(lines)
    assert "  fl.rounds = 7 (default 24)  [int]\n      Communication rounds." in text
    assert "  seed = 0  [int]" in text and "``" not in text


def test_off_is_a_choice_not_a_boolean(tmp_path):
    """YAML 1.1 reads a bare ``off`` as False: ``train.autocast=off`` (command line or YAML
    file) still means the choice ``"off"``; a boolean stays an error where no such word fits."""
    assert load_config(None, ["train.autocast=off"]).train.autocast == "off"
    y = tmp_path / "exp.yaml"
    y.write_text("train:\n  autocast: off\n")
    assert load_config(y).train.autocast == "off"
    with pytest.raises(ConfigError, match="train.optimizer: expected one of"):
        load_config(None, ["train.optimizer=off"])


@pytest.mark.parametrize("where", ["override", "toml", "yaml"])
@pytest.mark.parametrize("key, hint", [
    ("fl.rouds", "fl.rounds"), ("fll.rounds", "fl"), ("fl.yoco.lamm", "fl.yoco.lam"),
    ("fl.yocoo.lam", "fl.yoco"), ("zzzz", None)])
def test_a_misspelt_key_gets_did_you_mean(where, key, hint, tmp_path):
    """A key that is not there is named with the closest key beside it, wherever it was
    written; a key like no other is named alone."""
    *sections, leaf = key.split(".")
    if where == "override":
        args = (None, [f"{key}=3"])
    elif where == "toml":
        path = tmp_path / "c.toml"
        head = f"[{'.'.join(sections)}]\n" if sections else ""
        path.write_text(f"{head}{leaf} = 3\n")
        args = (path, [])
    else:
        path = tmp_path / "c.yaml"
        text, indent = "", ""
        for part in sections:
            text += f"{indent}{part}:\n"
            indent += "  "
        path.write_text(f"{text}{indent}{leaf}: 3\n")
        args = (path, [])
    with pytest.raises(ConfigError) as e:
        load_config(*args)
    msg = str(e.value)
    assert "unknown config key '" in msg
    if hint is None:
        assert "did you mean" not in msg
    else:
        assert msg.endswith(f"; did you mean '{hint}'?"), msg
    if where != "override":
        assert msg.startswith(f"{path}: ")


def test_table_valued_keys_are_derived_and_stay_whole_when_flattened():
    from fedmllm.config import TABLE_KEYS, flatten

    assert TABLE_KEYS == {"fl.strategy", "fl.yoco.params_a", "fl.yoco.params_b"}
    flat = flatten(load_config(None, ["fl.strategy.eta=0.1"]).to_dict())
    assert flat["fl.strategy"] == {"eta": 0.1} and flat["fl.yoco.lam"] == 1e-3
    assert not any(k.startswith("fl.strategy.") for k in flat)


def test_bounds_and_types_are_one_line_with_the_declared_bound(tmp_path):
    for override, message in (("lora.dropout=1", "lora.dropout: must be in [0, 1)"),
                              ("data.presence=2", "data.presence: must be in [0, 1]"),
                              ("train.lr=0", "train.lr: must be > 0"),
                              ("lora.layers=[0, a]", "lora.layers: expected list[int] | None"),
                              ("eval.views=[image_text, x]", "eval.views[1]: expected one of"),
                              ("fl.rounds=2.0", "fl.rounds: expected an integer, got 2.0")):
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
        assert str(e.value).startswith(message), (override, str(e.value))
    # a wrong type is named before a bound; a YAML date is no string
    with pytest.raises(ConfigError, match="fl.rounds: expected an integer"):
        load_config(None, ["lora.r=0", "fl.rounds=x"])
    y = tmp_path / "d.yaml"
    y.write_text("model:\n  name: 2024-01-01\n")
    with pytest.raises(ConfigError, match=r"model\.name: expected str \| None, got datetime"):
        load_config(y)


def test_command_line_defaults_are_the_declared_ones():
    from fedmllm.cli import build_parser
    from fedmllm.config import declared

    cfg = Config()
    args = build_parser().parse_args(["prepare", "--dataset", "synth", "--out", "x"])
    assert (args.alpha, args.missing_rate, args.scenario, args.clients, args.seed) == (
        cfg.data.alpha, cfg.data.missing_rate, cfg.data.scenario, cfg.fl.num_clients, cfg.seed)
    assert declared("model.preset").choices == ("tiny", "small", "tiny-structured", "deep")
    assert declared("eval.views").default == cfg.eval.views
    assert "synth" in declared("data.dataset").choices
