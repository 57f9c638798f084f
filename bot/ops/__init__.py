"""Support operations: the files ops people own, read and checked with file and line.

Modules, by what they are for:

- ``support``: support.yml (brand, staffing, targets, priority, routing, watchdog, public replies) and
  ``load_support_config``; its ``hours`` section is read in ``hours``.
- ``config``: what support.yml says once checked (``SupportConfig`` and its parts).
- ``nodes``: reading YAML node by node, so a mistake names its line.
- ``errors``: ``OpsConfigError``, the one shape of every reported mistake.
- ``cli``: ``python -m bot ops check`` (``check_main``, and ``add_ops_parser`` for ``python -m bot``).

The names below are the package's interface; import them from ``bot.ops``.
"""

from bot.ops.cli import check_main, summarize
from bot.ops.config import Brand, Languages, PriorityRules, PublicReply, Routing, SupportConfig, WatchdogRules
from bot.ops.errors import OpsConfigError
from bot.ops.hours import WEEKDAYS
from bot.ops.support import (
    KNOWN_CASE_TYPES,
    SUPPORT_FILE_ENV,
    SUPPORT_FILE_NAME,
    default_support_path,
    load_support_config,
)

__all__ = [
    "KNOWN_CASE_TYPES",
    "Languages",
    "SUPPORT_FILE_ENV",
    "SUPPORT_FILE_NAME",
    "WEEKDAYS",
    "Brand",
    "OpsConfigError",
    "PriorityRules",
    "PublicReply",
    "Routing",
    "SupportConfig",
    "WatchdogRules",
    "check_main",
    "default_support_path",
    "load_support_config",
    "summarize",
]
