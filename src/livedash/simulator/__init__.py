"""Realistic hospital activity, written straight into the database as the main application would."""

from __future__ import annotations

from livedash.simulator.hospital import HospitalSimulator
from livedash.simulator.rates import KINDS
from livedash.simulator.seed import SeedSummary, seed_hospital

__all__ = ["KINDS", "HospitalSimulator", "SeedSummary", "seed_hospital"]
