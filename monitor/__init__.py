"""atmp-monitor: watches drug regulators for advanced therapy (ATMP) approvals."""

__version__ = "0.1.0"
