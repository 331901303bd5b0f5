"""An ls plugin: one mechanism (MetaLoRA-AST) and one dataset reader (``class_folders``).

Importing this module registers both, which is all a plugin does; ls imports it through the entry point in
``pyproject.toml``, through ``LS_PLUGINS=ls_plugin_example``, ``-p ls_plugin_example`` or
``plugins: [ls_plugin_example]`` in a config.
"""

from ls.data.sources import register_reader
from ls.models import Variant, register_variant
from ls_plugin_example.mechanism import MetadataLoRA, MetaLoRAOptions
from ls_plugin_example.reader import TASKS, read_class_folders

__version__ = "0.1.0"

register_variant(Variant("meta_lora", "MetaLoRA-AST", MetaLoRAOptions, MetadataLoRA, aliases=("metalora",)))
register_reader("class_folders", read_class_folders, tasks=TASKS)

__all__ = ["MetaLoRAOptions", "MetadataLoRA", "read_class_folders"]
