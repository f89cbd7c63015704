"""spire-health-exporter: probes the SPIRE agent's Workload API and exports what a workload sees."""

__version__ = "0.1.0"
