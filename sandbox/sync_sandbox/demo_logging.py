"""The logging filter of `make demo` (demo_logging.yaml beside this file): Meltano's records of
the targets' run reports pass, the rest goes to the demo's log file only."""

from __future__ import annotations

import logging
from pathlib import Path

#: `meltano --log-config` for the demo's runs.
CONFIG = Path(__file__).with_name("demo_logging.yaml")


class RunReports(logging.Filter):
    """A plugin line Meltano relays carries the plugin's logger name (`plugin_logger`, from
    the plugins' structured logging); the targets log their run reports under
    `<target>.report` (sync_common.report.RunReport.publish)."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = record.msg if isinstance(record.msg, dict) else {}
        return str(event.get("plugin_logger", "")).endswith(".report")
