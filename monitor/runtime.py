"""Everything a command or a worker needs, loaded and validated once from the config folder.

The CLI and the Celery tasks both start here, so they can never disagree about config or store.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from monitor.catalogue import load_baseline
from monitor.config import ConfigError, Settings, SourceConfig, load_sources
from monitor.models import Product
from monitor.poll import Poller
from monitor.store import Store, open_store


@dataclass
class Runtime:
    settings: Settings
    sources: list[SourceConfig]
    baseline: list[Product]

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Read and validate all config; raises ConfigError before anything is touched."""
        folder = settings.config_dir
        if not folder.is_dir():
            raise ConfigError(folder, "config folder not found")
        return cls(
            settings=settings,
            sources=load_sources(folder / "sources.yaml"),
            baseline=load_baseline(folder / "baseline.yaml"),
        )

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings.database_url)

    def source(self, source_id: str) -> SourceConfig:
        for source in self.sources:
            if source.id == source_id:
                return source
        raise ConfigError(self.settings.config_dir / "sources.yaml", f"no source with id {source_id!r}")

    def poller(self) -> Poller:
        return Poller(self.store, self.sources, self.baseline)
