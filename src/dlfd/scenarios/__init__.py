"""Scenario registry; importing this package imports its modules, which register the scenarios."""

from dlfd.scenarios.registry import (
    SCENARIOS,
    Scenario,
    get_scenario,
    list_scenarios,
    register_scenario,
    scenario_options,
)

SCENARIOS.discover(__name__)

__all__ = ["Scenario", "get_scenario", "list_scenarios", "register_scenario", "scenario_options"]
