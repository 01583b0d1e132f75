"""Scenario registry; importing this package registers the built-in scenarios."""

from dlfd.scenarios import custom, mucac, mufac, orl, rafdb  # noqa: F401  (registers them)
from dlfd.scenarios.registry import (
    Scenario,
    get_scenario,
    list_scenarios,
    register_scenario,
    scenario_options,
)

__all__ = ["Scenario", "get_scenario", "list_scenarios", "register_scenario", "scenario_options"]
