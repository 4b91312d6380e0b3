"""Raster and vector I/O: read GeoTIFF stacks, rasterise vectors onto the grid, write GIS layers atomically."""

from trafficrnn.io.export import check_georeference, to_geotiff, to_geopackage, write_geopackage, write_stack
from trafficrnn.io.netcdf import read_netcdf, to_netcdf
from trafficrnn.io.stack import read_stack
from trafficrnn.io.vector import aggregate_to_segments, rasterize_lines, rasterize_points, read_vectors

__all__ = [
    "read_stack",
    "read_vectors",
    "rasterize_points",
    "rasterize_lines",
    "aggregate_to_segments",
    "to_geotiff",
    "write_stack",
    "to_netcdf",
    "read_netcdf",
    "to_geopackage",
    "write_geopackage",
    "check_georeference",
]
