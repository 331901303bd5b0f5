"""Plugins: mechanisms and dataset readers defined outside ls, in every command and every process.

A plugin is a Python module whose import registers what it brings: variants (``ls.models.register_variant``)
and dataset readers (``ls.data.sources.register_reader``). As with pytest's plugins, one arrives in four ways:

- an **entry point** of the group ``ls.plugins`` declared by an installed distribution
  (``[project.entry-points."ls.plugins"] mine = "my_pkg.ls_plugin"``);
- the environment variable **``LS_PLUGINS=mod1,mod2``**, for modules on ``sys.path``;
- **``-p/--plugin MODULE``** on every command line of ls (``ls.utils.cli``);
- a top-level **``plugins: [module]``** key of a run config or study file (``ls.config``).

Entry points and ``LS_PLUGINS`` are loaded when the variant table or the reader table is first read
(:func:`load_pending`); ``-p`` and ``plugins:`` when the command line or the config is read.
``LS_DISABLE_PLUGIN_AUTOLOAD=1`` leaves the entry points out (pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).

**Child processes.** Every module loaded by name (``LS_PLUGINS``, ``-p``, ``plugins:``) is added to
``LS_PLUGINS`` in ``os.environ``, so that every process started from this one (a study's spawned workers,
DataLoader workers, torchrun ranks) loads it when its own tables are first read; entry points load there by
themselves.

**Provenance.** Each registration is attributed to the plugin being loaded, or, for a module the user imported
itself (a root script's ``import my_mechanism``), to that module (:func:`claim`). A run records what its
variant and reader came from (:func:`requirements`: module, distribution and version); :func:`require` turns a
missing one into one error that says what to load and how. A checkpoint never imports code by itself: the
user names the plugin. Two plugins registering the same name is an error naming both.

This module is torch-free and imports nothing of ls above ``ls.utils``: the tables call it.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Entry-point group an installed distribution declares its plugin module in.
ENTRY_POINT_GROUP = "ls.plugins"
#: Comma-separated plugin modules to load in this process and every process it starts.
PLUGINS_ENV = "LS_PLUGINS"
#: Set to 1 to load no entry point (only the plugins named by LS_PLUGINS, -p or plugins:).
AUTOLOAD_ENV = "LS_DISABLE_PLUGIN_AUTOLOAD"
#: The kinds of names a plugin registers (what a record's ``kind`` says).
KINDS = ("variant", "reader")

_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(ValueError):
    """A plugin cannot be loaded, two plugins claim one name, or what a run needs is not loaded (one line)."""


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: its name (the entry point's, else the module), the module that is imported, the
    distribution that installed it (None for a module on ``sys.path``) and how it came (``entry point``,
    ``LS_PLUGINS``, ``--plugin``, ``plugins: in <file>`` or ``import``: registered by a module the user
    imported)."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    source: str = "import"

    def describe(self) -> str:
        where = f"{self.distribution} {self.version}" if self.distribution else "not installed"
        return f"{self.name} = {self.module} ({where}; {self.source})"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "module": self.module, "distribution": self.distribution,
                "version": self.version, "source": self.source}


@dataclass(frozen=True)
class _Origin:
    kind: str
    name: str
    module: str | None  # None: built into ls


_plugins: dict[str, Plugin] = {}  # module -> plugin
_named: set[str] = set()  # modules loaded by name (exported to LS_PLUGINS)
_origins: dict[tuple[str, str], _Origin] = {}
_loading: list[Plugin] = []
_autoloaded = False


# =================================================================================================
# Loading
# =================================================================================================
def autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def split_modules(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [m.strip() for m in (text or "").split(",") if m.strip()]


def load_pending() -> None:
    """Load what this process has not loaded yet: the ``ls.plugins`` entry points (once) and the modules of
    ``LS_PLUGINS``. The variant and reader tables call this before they are read; cheap after the first call."""
    global _autoloaded
    if _loading:  # a plugin being imported reads a table: it gets the table as it is
        return
    if not _autoloaded:
        _autoloaded = True
        if not autoload_disabled():
            _load_entry_points()
    pending = [m for m in split_modules(os.environ.get(PLUGINS_ENV)) if m not in _named]
    if pending:
        load(pending, PLUGINS_ENV)


def load(modules: Iterable[str] | str | None, source: str) -> list[Plugin]:
    """Import each plugin module named in ``modules`` (a list, or one comma-separated string), record it, and
    add it to ``LS_PLUGINS`` for the processes this one starts. ``source`` says where the names come from
    (``--plugin``, ``plugins: in run.yaml``, ...) for messages. Loading a module twice does nothing."""
    names = split_modules(modules) if isinstance(modules, str) else [str(m).strip() for m in modules or ()]
    loaded = []
    for module in names:
        if not _MODULE_NAME.match(module):
            raise PluginError(f"{source}: {module!r} is not a module name (expected e.g. my_package.ls_plugin)")
        known = _plugins.get(module)
        if module not in _named:
            if known is None or known.source == "import":
                plugin = Plugin(module, module, *_distribution_of(module), source=source)
                _import(plugin, module)
                _plugins[module] = plugin
            _named.add(module)
            _export(module)
        loaded.append(_plugins[module])
    return loaded


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    seen: set[str] = set()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        module = ep.value.partition(":")[0].strip()
        known = _plugins.get(module)
        if module in seen or (known is not None and known.source != "import"):
            continue  # a module imported by the user before (its own script) becomes the entry point's plugin
        seen.add(module)
        dist = getattr(ep, "dist", None)
        plugin = Plugin(ep.name, module, getattr(dist, "name", None), getattr(dist, "version", None),
                        "entry point")
        _import(plugin, ep.value, entry_point=ep)
        _plugins[module] = plugin


def _import(plugin: Plugin, target: str, entry_point: Any = None) -> None:
    """Import ``plugin.module`` (what it registers is attributed to it)."""
    _loading.append(plugin)
    try:
        if entry_point is not None:
            entry_point.load()
        else:
            importlib.import_module(plugin.module)
    except PluginError:
        raise
    except ImportError as exc:
        hint = (f" (entry point {plugin.name!r} of {plugin.distribution}; set {AUTOLOAD_ENV}=1 to start without "
                "entry points)" if plugin.source == "entry point" else "")
        missing = getattr(exc, "name", None)
        what = "is not importable" if missing and plugin.module.startswith(missing) else "failed to import"
        raise PluginError(f"{plugin.source}: plugin module {plugin.module!r} {what}: {exc}{hint}") from exc
    except Exception as exc:
        raise PluginError(f"{plugin.source}: plugin module {plugin.module!r} failed while loading: "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        _loading.pop()


def _export(module: str) -> None:
    names = split_modules(os.environ.get(PLUGINS_ENV))
    if module not in names:
        os.environ[PLUGINS_ENV] = ",".join([*names, module])


@functools.lru_cache(maxsize=1)
def _packages() -> Mapping[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution that provides ``module`` and its version; (None, None) for a module that
    is only on ``sys.path``."""
    from importlib.metadata import PackageNotFoundError, version

    top = module.split(".")[0]
    if top == "__main__":
        return None, None
    for dist in _packages().get(top, ()):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None, None


# =================================================================================================
# Who registered what
# =================================================================================================
def _builtin(module: str) -> bool:
    return module == "ls" or module.startswith("ls.")


def _registrant(registering_module: str) -> str | None:
    """The module a registration made now is attributed to (None: ls itself)."""
    if _builtin(registering_module):
        return None
    return _loading[-1].module if _loading else registering_module


def check_new(kind: str, name: str, registering_module: str) -> None:
    """Raise :class:`PluginError` when ``name`` (a ``kind``: variant or reader) is registered already by
    another plugin (or by ls), naming both; ``registering_module`` is the module registering it now."""
    module = _registrant(registering_module)
    existing = _origins.get((kind, name))
    if existing is not None and existing.module != module:
        raise PluginError(f"{kind} {name!r} is already registered by {_by(existing.module)}, and {_by(module)} "
                          "registers it again: load only one of them")


def claim(kind: str, name: str, registering_module: str) -> None:
    """Record that ``name`` is registered by the plugin being loaded, by ls itself, or by the module
    ``registering_module`` that the user imported (:func:`check_new` first)."""
    module = _registrant(registering_module)
    if module is not None and module not in _plugins:
        _plugins[module] = Plugin(module, module, *_distribution_of(module), source="import")
    _origins[(kind, name)] = _Origin(kind, name, module)


def release(kind: str, name: str) -> None:
    """Forget a registration (``unregister_variant``, ``unregister_reader``)."""
    _origins.pop((kind, name), None)


def _by(module: str | None) -> str:
    if module is None:
        return "ls itself"
    plugin = _plugins.get(module)
    where = f" ({plugin.distribution} {plugin.version})" if plugin is not None and plugin.distribution else ""
    return f"plugin module {module}{where}"


def origin(kind: str, name: str) -> Plugin | None:
    """The plugin that registered ``name`` (None for what ls has built in, or for an unknown name)."""
    found = _origins.get((kind, name))
    return None if found is None or found.module is None else _plugins.get(found.module)


def loaded() -> list[Plugin]:
    """Every plugin of this process (also modules the user imported that registered something), by name."""
    used = {o.module for o in _origins.values() if o.module is not None}
    return sorted((p for m, p in _plugins.items() if m in _named or m in used or p.source == "entry point"),
                  key=lambda p: p.name)


def registered_by(plugin: Plugin) -> dict[str, list[str]]:
    """``{"variants": [...], "readers": [...]}`` that ``plugin`` registered."""
    out: dict[str, list[str]] = {f"{k}s": [] for k in KINDS}
    for o in _origins.values():
        if o.module == plugin.module:
            out[f"{o.kind}s"].append(o.name)
    return out


def requirements(variants: Sequence[str] = (), readers: Sequence[str] = ()) -> list[dict[str, Any]]:
    """What a run needs from plugins: one record (``kind``, ``name``, ``plugin``, ``module``, ``distribution``,
    ``version``) per variant and reader that is not built into ls. Checkpoints and ``run.json`` carry them."""
    out = []
    for kind, names in (("variant", variants), ("reader", readers)):
        for name in dict.fromkeys(names):
            plugin = origin(kind, name)
            if plugin is not None:
                out.append({"kind": kind, "name": name, "plugin": plugin.name, "module": plugin.module,
                            "distribution": plugin.distribution, "version": plugin.version})
    return out


def params(plugins: Sequence[Plugin] | None = None) -> dict[str, str]:
    """``{"plugins.<name>": "<module> <version>"}`` of the loaded plugins, as a run's params."""
    return {f"plugins.{p.name}": f"{p.module} {p.version or '(not installed)'}"
            for p in (loaded() if plugins is None else plugins)}


def describe_loaded() -> str | None:
    """One line listing the loaded plugins and what they registered (None when there are none)."""
    plugins = loaded()
    if not plugins:
        return None
    parts = []
    for p in plugins:
        names = [f"{kind[:-1]} {', '.join(names)}" for kind, names in registered_by(p).items() if names]
        parts.append(p.describe() + (f": {'; '.join(names)}" if names else ""))
    return "plugins: " + " | ".join(parts)


def require(records: Any, where: str) -> None:
    """Check that every plugin record of a checkpoint or run (:func:`requirements`) is loaded here: entry
    points and ``LS_PLUGINS`` are loaded first; nothing named by the records is imported. A missing one is a
    :class:`PluginError` naming the variant or reader, the module and the ways to load it; a different version
    of the plugin only warns."""
    if not records:
        return
    load_pending()
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, Mapping) or record.get("kind") not in KINDS or not record.get("name"):
            continue
        kind, name = str(record["kind"]), str(record["name"])
        if (kind, name) not in _origins:
            raise PluginError(missing_message(record, where))
        plugin = origin(kind, name)
        want = record.get("version")
        if plugin is not None and want and plugin.version and plugin.version != want:
            warnings.warn(f"{where} was made with {record.get('distribution') or record.get('module')} {want}; "
                          f"{kind} {name!r} comes from {plugin.version} here", stacklevel=2)


def missing_message(record: Mapping[str, Any], where: str) -> str:
    """The one line saying that ``where`` needs a plugin that is not loaded, and how to load it."""
    kind, name, module = record.get("kind"), record.get("name"), str(record.get("module") or "?")
    dist = record.get("distribution")
    made = f" (distribution {dist} {record.get('version')})" if dist else ""
    if module == "__main__":
        return (f"{where} needs {kind} {name!r}, registered by the script that trained it (module __main__), "
                "which is not loaded: move the registration into a module and load that with -p MODULE, "
                f"{PLUGINS_ENV}=MODULE or 'plugins: [MODULE]' in the config")
    install = f"; installing {dist} loads it by its entry point" if dist and not autoload_disabled() else ""
    return (f"{where} needs {kind} {name!r} from the plugin module {module}{made}, which is not loaded: load it "
            f"with -p {module}, {PLUGINS_ENV}={module} or 'plugins: [{module}]' in the config{install} (a "
            "checkpoint never imports code by itself)")


def unknown_hint() -> str:
    """What an unknown variant or dataset kind may be: a plugin that is not loaded."""
    return (f"a variant or reader of a plugin needs the plugin loaded: -p MODULE, {PLUGINS_ENV}=MODULE or "
            "'plugins: [MODULE]' in the config")


def _snapshot() -> tuple:
    """The whole state (tests restore it)."""
    return (dict(_plugins), set(_named), dict(_origins), _autoloaded)


def _restore(state: tuple) -> None:
    global _autoloaded
    plugins, named, origins, autoloaded = state
    _plugins.clear(), _plugins.update(plugins)
    _named.clear(), _named.update(named)
    _origins.clear(), _origins.update(origins)
    _autoloaded = autoloaded


def caller_module(depth: int = 2) -> str:
    """``__name__`` of the module that called the function calling this one (a ``register_*`` function's
    caller: the module a registration is attributed to outside a plugin load)."""
    return str(sys._getframe(depth).f_globals.get("__name__", "__main__"))


__all__ = [
    "AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PLUGINS_ENV",
    "Plugin",
    "PluginError",
    "autoload_disabled",
    "caller_module",
    "check_new",
    "claim",
    "describe_loaded",
    "load",
    "load_pending",
    "loaded",
    "missing_message",
    "origin",
    "params",
    "registered_by",
    "release",
    "require",
    "requirements",
    "split_modules",
    "unknown_hint",
]
