"""config/: the TOML configuration, typed and validated. One small dataclass per section."""

from doorstep.config.load import load_config, parse_config, resolve_secret
from doorstep.config.schema import Config

__all__ = ["Config", "load_config", "parse_config", "resolve_secret"]
