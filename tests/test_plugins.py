"""ls.utils.plugins: the four ways a plugin arrives (entry points, LS_PLUGINS, -p, plugins:), child processes,
where each registration comes from, and the one error a checkpoint of an unloaded plugin gives."""

from __future__ import annotations

import os
import sys
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from ls.config import ConfigError, config_from_dict
from ls.data import sources
from ls.data.tasks import DATASET_TASKS
from ls.models import variants as table
from ls.utils import plugins
from ls.utils.cli import run_command

DATA = {"dataset": {"data_folder": "x"}}


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A process whose plugin state, tables and environment are restored afterwards; ``tmp_path / "site"`` is
    on ``sys.path`` for the plugin modules a test writes."""
    state = plugins._snapshot()
    saved = (dict(table.VARIANTS), dict(table._ALIASES), dict(sources._READERS), dict(DATASET_TASKS),
             dict(sources._SCORES))
    modules = set(sys.modules)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    env = {name: os.environ.pop(name, None) for name in (plugins.PLUGINS_ENV, plugins.AUTOLOAD_ENV)}
    plugins._packages.cache_clear()
    plugins._autoloaded = True  # this test process loads no entry point of the environment unless a test asks
    yield site
    plugins._restore(state)
    for name, value in env.items():  # what loading wrote into os.environ for child processes
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
    for live, old in zip((table.VARIANTS, table._ALIASES, sources._READERS, DATASET_TASKS, sources._SCORES), saved):
        live.clear()
        live.update(old)
    for name in set(sys.modules) - modules:  # the plugin modules a test wrote (never a library's)
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(site)):
            del sys.modules[name]
    plugins._packages.cache_clear()


def write_plugin(site: Path, variant: str | None = None, reader: str | None = None, module: str | None = None,
                 marker: Path | None = None) -> str:
    """A torch-free plugin module registering ``variant`` and/or ``reader``; returns its name."""
    module = module or f"plug_{uuid.uuid4().hex[:8]}"
    lines = ["from ls.models.options import ModelConfig", "from ls.models.variants import Variant, register_variant"]
    if marker is not None:
        lines.append(f"open({str(marker)!r}, 'w').close()")
    if variant:
        lines.append(f"register_variant(Variant({variant!r}, 'Mine', ModelConfig, "
                     "'ls.models.conditioning:NoConditioning'))")
    if reader:
        lines += ["from ls.data.sources import register_reader",
                  f"register_reader({reader!r}, lambda cfg: None, tasks=('icbhi4',))"]
    (site / f"{module}.py").write_text("\n".join(lines) + "\n")
    return module


def write_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees it: ``<dist>-<version>.dist-info`` on sys.path."""
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[ls.plugins]\n" + "".join(f"{name} = {target}\n" for name, target in entry_points.items()))
    modules = {target.partition(":")[0].split(".")[0] for target in entry_points.values()}
    (info / "top_level.txt").write_text("\n".join(sorted(modules)) + "\n")


def _variant_origin(name: str) -> tuple[str, str]:
    """In a spawned child: the variant's display name and where its plugin came from."""
    from ls.models.variants import get_variant
    from ls.utils.plugins import origin

    return get_variant(name).display_name, origin("variant", name).source


# -- the four ways --------------------------------------------------------------------------------------------
def test_ls_plugins_loads_its_modules_when_the_variant_table_is_first_read(isolated, monkeypatch):
    module = write_plugin(isolated, variant="ls_env_variant", reader="ls_env_reader")
    monkeypatch.setenv(plugins.PLUGINS_ENV, f" {module} ,")
    assert module not in sys.modules
    assert table.get_variant("ls_env_variant").display_name == "Mine"  # the table's first read loads it
    assert config_from_dict({"dataset": {"data_folder": "x", "name": "ls_env_reader"}}).dataset.name == "ls_env_reader"
    plugin = plugins.origin("variant", "ls_env_variant")
    assert (plugin.module, plugin.source, plugin.distribution) == (module, plugins.PLUGINS_ENV, None)
    assert plugins.requirements(["ast", "ls_env_variant"], ["icbhi", "ls_env_reader"]) == [
        {"kind": "variant", "name": "ls_env_variant", "plugin": module, "module": module, "distribution": None,
         "version": None},
        {"kind": "reader", "name": "ls_env_reader", "plugin": module, "module": module, "distribution": None,
         "version": None}]
    assert plugins.params()[f"plugins.{module}"] == f"{module} (not installed)"
    assert "variant ls_env_variant; reader ls_env_reader" in plugins.describe_loaded()


def test_an_entry_point_loads_with_its_distribution_unless_autoload_is_off(isolated, monkeypatch):
    module = write_plugin(isolated, variant="ep_variant")
    write_distribution(isolated, "ep-dist", "1.2.3", {"mine": module})
    monkeypatch.setenv(plugins.AUTOLOAD_ENV, "1")
    plugins._autoloaded = False
    with pytest.raises(ValueError, match="unknown model variant 'ep_variant'.*-p MODULE, LS_PLUGINS=MODULE"):
        table.get_variant("ep_variant")
    monkeypatch.delenv(plugins.AUTOLOAD_ENV)
    plugins._autoloaded = False
    assert table.get_variant("ep_variant").name == "ep_variant"
    plugin = plugins.origin("variant", "ep_variant")
    assert (plugin.name, plugin.module, plugin.distribution, plugin.version, plugin.source) == (
        "mine", module, "ep-dist", "1.2.3", "entry point")
    assert plugins.params()["plugins.mine"] == f"{module} 1.2.3"
    assert plugins.PLUGINS_ENV not in os.environ  # children load entry points by themselves


def test_a_broken_entry_point_names_itself_and_how_to_start_without_entry_points(isolated):
    write_distribution(isolated, "broken-dist", "0.1", {"broken": "no_such_plugin_module"})
    plugins._autoloaded = False
    with pytest.raises(plugins.PluginError, match=r"entry point: plugin module 'no_such_plugin_module' is not "
                       r"importable.*entry point 'broken' of broken-dist; set LS_DISABLE_PLUGIN_AUTOLOAD=1"):
        table.variant_table()


def test_dash_p_loads_before_the_command_and_spawned_children_load_it_too(isolated, capsys):
    module = write_plugin(isolated, variant="cli_variant")
    args = type("Args", (), {"plugins": [module], "traceback": False})()
    assert run_command(lambda: 0 if table.get_variant("cli_variant") else 1, args) == 0
    assert os.environ[plugins.PLUGINS_ENV].split(",")[-1] == module
    assert plugins.origin("variant", "cli_variant").source == "--plugin"
    # a spawned worker (as a study's) gets it through LS_PLUGINS when its table is first read
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        assert pool.submit(_variant_origin, "cli_variant").result(timeout=300) == ("Mine", plugins.PLUGINS_ENV)
    bad = type("Args", (), {"plugins": ["no_such_module_here"], "traceback": False})()
    assert run_command(lambda: 0, bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("error: --plugin: plugin module 'no_such_module_here' is not importable: No module named "
                   "'no_such_module_here'")]


def test_the_config_key_loads_its_plugins_before_the_models_are_read(isolated, tmp_path):
    module = write_plugin(isolated, variant="cfg_variant")
    cfg = config_from_dict({**DATA, "plugins": [module], "models": {"cfg_variant": {"model_size": "tiny224"}}})
    assert cfg.plugins == [module] and cfg.model("cfg_variant").model_size == "tiny224"
    assert plugins.origin("variant", "cfg_variant").source == "plugins: in <dict>"
    other = write_plugin(isolated, variant="set_variant")
    assert config_from_dict({**DATA, "models": {"set_variant": {}}}, "run.yaml",
                            [f"plugins=[{other}]"]).plugins == [other]
    with pytest.raises(ConfigError, match=r"'plugins' in run.yaml: expected a list of module names"):
        config_from_dict({**DATA, "plugins": module}, "run.yaml")
    with pytest.raises(ConfigError, match=r"plugins: in run.yaml: plugin module 'missing_mod_x' is not importable"):
        config_from_dict({**DATA, "plugins": ["missing_mod_x"]}, "run.yaml")
    with pytest.raises(ConfigError, match=r"plugins: in run.yaml: 'a b' is not a module name"):
        config_from_dict({**DATA, "plugins": ["a b"]}, "run.yaml")


def test_a_stored_config_never_imports_its_plugins(isolated, tmp_path):
    marker = tmp_path / "imported"
    module = write_plugin(isolated, variant="stored_variant", marker=marker)
    with pytest.raises(ConfigError, match="unknown model variant 'stored_variant'"):
        config_from_dict({**DATA, "plugins": [module], "models": {"stored_variant": {}}}, load_plugins=False)
    assert not marker.exists()


# -- who registered what ----------------------------------------------------------------------------------------
def test_two_plugins_registering_one_name_is_one_error_naming_both(isolated):
    first = write_plugin(isolated, variant="twice", reader="twice_reader")
    second = write_plugin(isolated, variant="twice")
    third = write_plugin(isolated, reader="twice_reader")
    plugins.load([first], "--plugin")
    with pytest.raises(plugins.PluginError, match=f"variant 'twice' is already registered by plugin module {first}, "
                       f"and plugin module {second} registers it again: load only one of them"):
        plugins.load([second], "--plugin")
    with pytest.raises(plugins.PluginError, match=f"reader 'twice_reader' is already registered by plugin module "
                       f"{first}, and plugin module {third}"):
        plugins.load([third], "--plugin")
    ast = write_plugin(isolated, variant="ast")
    with pytest.raises(plugins.PluginError, match=f"'ast' is already registered by ls itself, and plugin module {ast}"):
        plugins.load([ast], "LS_PLUGINS")


def test_a_module_the_user_imports_is_recorded_as_where_its_variant_came_from(isolated):
    module = write_plugin(isolated, variant="imported_variant")
    __import__(module)
    plugin = plugins.origin("variant", "imported_variant")
    assert (plugin.module, plugin.source) == (module, "import")
    assert plugins.PLUGINS_ENV not in os.environ  # only what was named travels to child processes
    plugins.load([module], "--plugin")  # named later: now it travels
    assert plugins.origin("variant", "imported_variant").source == "--plugin"
    assert os.environ[plugins.PLUGINS_ENV] == module


def test_a_checkpoint_names_the_plugin_it_needs_and_imports_nothing(isolated, tmp_path, monkeypatch):
    import torch

    from ls.engine.checkpoint import REQUIRED_KEYS, read_checkpoint

    marker = tmp_path / "imported"
    module = write_plugin(isolated, variant="ckpt_variant", marker=marker)
    record = {"kind": "variant", "name": "ckpt_variant", "plugin": "mine", "module": module,
              "distribution": "mine-dist", "version": "2.0"}
    path = tmp_path / "best.pt"
    torch.save({**dict.fromkeys(REQUIRED_KEYS), "format": 2, "config": {}, "model": {}, "plugins": [record]}, path)
    with pytest.raises(plugins.PluginError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == (
        f"checkpoint {path} needs variant 'ckpt_variant' from the plugin module {module} (distribution mine-dist "
        f"2.0), which is not loaded: load it with -p {module}, LS_PLUGINS={module} or 'plugins: [{module}]' in "
        "the config; installing mine-dist loads it by its entry point (a checkpoint never imports code by itself)")
    assert not marker.exists()
    monkeypatch.setenv(plugins.PLUGINS_ENV, module)
    assert read_checkpoint(path)["plugins"] == [record]  # LS_PLUGINS is read before the check
    assert marker.exists()


# -- every command line ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(__import__("ls.cli").cli.COMMANDS))
def test_every_command_takes_dash_p(command, capsys):
    from ls.cli import main

    argv = [command, "ast", "-h"] if command == "train" else [command, "-h"]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "-p MODULE, --plugin MODULE" in text and "--traceback" in text
    assert text.startswith(f"usage: ausc {command}")


def test_the_command_dispatcher(capsys):
    from ls.cli import COMMANDS, main

    assert main([]) == 2 and "usage: ausc COMMAND" in capsys.readouterr().err
    assert main(["tnue"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: unknown command 'tnue'; commands: {', '.join(COMMANDS)} "
                                               "(ausc -h)")
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("ausc (ls ")
    assert main(["train"]) == 2 and "train needs the variant first" in capsys.readouterr().err
    assert main(["plugins"]) == 0
    assert "variants: ast, ast_fus, ast_film, ast_tafilm, ast_film_soft" in capsys.readouterr().out


# -- the shipped configs ---------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def test_the_repository_configs_folder_is_the_packages():
    assert (REPO / "configs").resolve() == (REPO / "ls" / "configs").resolve()


def test_a_built_in_config_is_named_by_its_name(tmp_path, monkeypatch):
    from ls.config import builtin_configs, load_config, to_dict
    from ls.study import load_study

    monkeypatch.chdir(tmp_path)  # not the repository: the names resolve inside the package
    assert to_dict(load_config("quickstart")) == to_dict(load_config(REPO / "configs" / "quickstart.yaml"))
    assert list(load_config("ast_film_soft").models) == ["ast_film_soft"]
    assert load_study("quickstart_study").settings.variants == ["ast", "ast_film_soft"]
    assert set(builtin_configs()) >= {"quickstart", "quickstart_study", "ast", "ast_fus", "ast_film", "ast_tafilm",
                                      "ast_film_soft", "mlflow"}
    with pytest.raises(ConfigError, match=r"config file not found: quickstrat \(or a built-in config's name: ast, "):
        load_config("quickstrat")
    (tmp_path / "quickstart").mkdir()  # a folder of that name is not a config file: the built-in one is meant
    assert load_config("quickstart").training.epochs == 15


def test_a_broken_plugin_is_one_error_not_one_per_section_of_the_config(isolated, monkeypatch):
    monkeypatch.setenv(plugins.PLUGINS_ENV, "no_such_plugin_here")
    with pytest.raises(plugins.PluginError) as caught:
        config_from_dict({**DATA, "models": {"ast": {}, "ast_film": {}}}, "run.yaml")
    assert str(caught.value) == ("LS_PLUGINS: plugin module 'no_such_plugin_here' is not importable: No module "
                                 "named 'no_such_plugin_here'")
