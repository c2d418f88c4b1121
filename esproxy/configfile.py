"""A config file as esproxy runs it: the settings declaration and its checks across settings
(esproxy/core/config.py), then the checks of the sections whose meaning lives on a floor above the
core: a Kafka entry's TLS and SASL (clients/kafkasecurity.py, which loads the files as the clients
will) and the follow rules (replay/follow.py). The CLI and every command load their config here, so a
bad value of any of them is an exit 2 naming its key path; core/config.py knows neither model.
"""

from __future__ import annotations

from pathlib import Path

from esproxy.clients import kafkasecurity
from esproxy.core import config
from esproxy.core.config import Config, SectionCheck
from esproxy.replay import follow

# The Kafka entries first, then the follow rules: the order core/config.py ran them in (now after its own).
CHECKS: tuple[SectionCheck, ...] = (kafkasecurity.check_config, follow.check_config)


def parse(text: str) -> Config:
    """A Config from YAML text, every check run; ConfigError naming the key path otherwise."""
    return config.parse(text, CHECKS)


def load(path: str | Path) -> Config:
    """The Config of the file at ``path``, every check run; ConfigError naming the key path otherwise."""
    return config.load(path, CHECKS)
