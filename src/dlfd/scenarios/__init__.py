"""Scenario registry; importing this package registers the built-in scenarios."""

from dlfd.scenarios import custom, orl  # noqa: F401  (registration side effect)
from dlfd.scenarios.registry import Scenario, get_scenario, list_scenarios, register_scenario

__all__ = ["Scenario", "get_scenario", "list_scenarios", "register_scenario"]
