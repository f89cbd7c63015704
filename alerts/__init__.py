"""Alert and recording rules, generated from alerts/config.yml (python -m alerts.generate)."""
