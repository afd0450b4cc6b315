"""Everything a command or a worker needs, loaded and validated once from the config folder.

The CLI and the Celery tasks both start here, so they can never disagree about config or store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import httpx

from monitor.catalogue import load_baseline
from monitor.config import ConfigError, Settings, SourceConfig, load_sources
from monitor.models import Product
from monitor.outbox import make_health_watch, make_outbox
from monitor.poll import Poller
from monitor.store import Store, open_store
from monitor.subscriptions import Subscriptions, load_optional


@dataclass
class Runtime:
    settings: Settings
    sources: list[SourceConfig]
    baseline: list[Product]
    subscriptions: Subscriptions = field(default_factory=Subscriptions)

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Read and validate all config; raises ConfigError before anything is touched."""
        folder = settings.config_dir
        if not folder.is_dir():
            raise ConfigError(folder, "config folder not found")
        sources = load_sources(folder / "sources.yaml")
        subscriptions = load_optional(folder / "subscriptions.yaml")
        subscriptions.check_sources({source.id for source in sources})
        return cls(settings=settings, sources=sources, baseline=load_baseline(folder / "baseline.yaml"),
                   subscriptions=subscriptions)

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings.database_url)

    def source(self, source_id: str) -> SourceConfig:
        for source in self.sources:
            if source.id == source_id:
                return source
        raise ConfigError(self.settings.config_dir / "sources.yaml", f"no source with id {source_id!r}")

    def poller(self, client: httpx.Client | None = None) -> Poller:
        """`client`: a long-lived worker passes its own, so each poll does not build one (and its TLS context)."""
        return Poller(self.store, self.sources, self.baseline, outbox=make_outbox(self.subscriptions),
                      health_watch=make_health_watch(self.subscriptions), client=client)
