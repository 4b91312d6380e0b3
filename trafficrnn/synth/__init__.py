"""Synthetic city: roads, traffic dynamics and aerial rendering (``simulate``), written as the GeoTIFF
stacks and GeoPackages a user would bring (``write_simulation``)."""

from trafficrnn.synth.city import City, make_city
from trafficrnn.synth.simulate import SimulationResult, simulate, write_simulation
from trafficrnn.synth.traffic import demand_profile

__all__ = [
    "City",
    "SimulationResult",
    "demand_profile",
    "make_city",
    "simulate",
    "write_simulation",
]
