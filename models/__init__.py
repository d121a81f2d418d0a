"""Offline ML: datasets, training, export, calibration, guardrails and the model registry."""
