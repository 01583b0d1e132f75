"""The audit: attacks with intervals, per-person evidence, a certificate and a readable page."""

from dlfd.audit.runner import AuditSettings, LoadedModel, load_models, run_audit

__all__ = ["AuditSettings", "LoadedModel", "load_models", "run_audit"]
