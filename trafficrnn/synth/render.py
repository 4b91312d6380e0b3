"""Aerial rendering of the synthetic city: RGB frames with sun-dependent shadows, vehicles, noise and clouds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import shapely
from rasterio import features
from scipy import ndimage

from trafficrnn.synth.city import City
from trafficrnn.synth.vehicles import KIND_NAMES, KINDS

#: colours of the head- and tail-lamps added at dusk and night
LAMP_HEAD = np.array([1.0, 0.95, 0.8], np.float32)
LAMP_TAIL = np.array([0.9, 0.08, 0.05], np.float32)
VALID_MIN = (
    24  # black level of the sensor: darkest valid value, well above nodata 0 (clouds) for JPEG
)
ROOF_COLOURS = np.array(
    [
        [0.55, 0.30, 0.22],
        [0.62, 0.36, 0.26],
        [0.45, 0.45, 0.47],
        [0.30, 0.30, 0.32],
        [0.72, 0.71, 0.68],
        [0.58, 0.57, 0.54],
        [0.40, 0.42, 0.38],
        [0.66, 0.62, 0.55],
    ],
    np.float32,
)


def sun_position(times, lat: float, lon: float) -> tuple[np.ndarray, np.ndarray]:
    """Solar azimuth (degrees clockwise from north) and elevation (degrees) at UTC ``times``.

    Returns
    -------
    azimuth, elevation : ndarray, shape (T,)
    """
    t = pd.DatetimeIndex(times)
    doy = t.day_of_year.to_numpy()
    hours = (t.hour + t.minute / 60 + t.second / 3600).to_numpy(float)
    g = 2 * math.pi / 365 * (doy - 1 + (hours - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * np.cos(g)
        + 0.070257 * np.sin(g)
        - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g)
    )
    eqt = 229.18 * (
        0.000075
        + 0.001868 * np.cos(g)
        - 0.032077 * np.sin(g)
        - 0.014615 * np.cos(2 * g)
        - 0.040849 * np.sin(2 * g)
    )
    ha = np.radians((hours * 60 + eqt + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_z = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(ha)
    zen = np.arccos(np.clip(cos_z, -1, 1))
    az = (
        np.degrees(np.arctan2(np.sin(ha), np.cos(ha) * np.sin(phi) - np.tan(decl) * np.cos(phi)))
        + 180
    )
    return az % 360, 90 - np.degrees(zen)


class Renderer:
    """Renders frames of one city; the static scene is built once.

    Parameters
    ----------
    city : City
    seed : int
        Seed of textures, sensor noise and clouds.
    clouds : bool
        Whether clouds may appear (as nodata, see :meth:`render`).
    cloud_cover : float
        Mean share of the scene under clouds when ``clouds`` is on (about half of the frames
        are clear).
    """

    def __init__(
        self, city: City, seed: int = 0, *, clouds: bool = False, cloud_cover: float = 0.15
    ):
        self.city = city
        self.rng = np.random.default_rng([seed, 4])
        self.h, self.w = city.shape
        self.gsd = city.transform.a
        self.clouds, self.cloud_cover = clouds, cloud_cover
        self._build_static()
        self._shadow_cache: dict[tuple[int, int], np.ndarray] = {}
        self._noise = self.rng.normal(0, 0.008, (4, self.h, self.w, 3)).astype(np.float32)
        if clouds:
            field = ndimage.gaussian_filter(
                self.rng.standard_normal((2 * self.h, 2 * self.w)).astype(np.float32),
                sigma=max(8.0, 60.0 / self.gsd),
                mode="wrap",
            )
            self._cloud = (field - field.mean()) / field.std()
            self._cloud_sorted = np.sort(self._cloud, axis=None)
            self._cloudiness = 0.0

    # -- static scene ------------------------------------------------------------------
    def _raster(self, shapes, fill=0, all_touched=False, dtype="int32"):
        shapes = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
        if not shapes:
            return np.full((self.h, self.w), fill, dtype=dtype)
        return features.rasterize(
            shapes,
            out_shape=(self.h, self.w),
            transform=self.city.transform,
            fill=fill,
            all_touched=all_touched,
            dtype=dtype,
        )

    def _build_static(self) -> None:
        rng, lu, roads = self.rng, self.city.landuse, self.city.roads
        h, w = self.h, self.w
        tex = ndimage.gaussian_filter(
            rng.standard_normal((h, w)).astype(np.float32), 3.0 / self.gsd
        )
        tex = tex / (tex.std() + 1e-6)
        fine = rng.standard_normal((h, w)).astype(np.float32)
        alb = np.empty((h, w, 3), np.float32)
        alb[:] = [0.42, 0.44, 0.31]
        alb *= (1 + 0.06 * tex)[..., None]
        height = np.zeros((h, w), np.float32)
        cls = lu["class"].to_numpy()
        zone = lu["zone"].to_numpy()
        grass = self._raster(
            [(g, 1) for g, c, z in zip(lu.geometry, cls, zone) if c == "vegetation" and z != "tree"]
        )
        alb[grass > 0] = np.array([0.30, 0.43, 0.20]) * (1 + 0.08 * tex[grass > 0])[:, None]
        water = self._raster([(g, 1) for g, c in zip(lu.geometry, cls) if c == "water"])
        alb[water > 0] = [0.13, 0.22, 0.27]
        park = self._raster([(g, 1) for g, c in zip(lu.geometry, cls) if c == "parking"])
        alb[park > 0] = np.array([0.36, 0.36, 0.37]) * (1 + 0.03 * fine[park > 0])[:, None]
        geoms = roads.geometry.to_numpy()
        side = self._raster(
            [
                (g, 1)
                for g in shapely.buffer(geoms, roads.width.to_numpy() / 2 + 2.5, cap_style="square")
            ]
        )
        alb[side > 0] = np.array([0.60, 0.59, 0.56]) * (1 + 0.03 * fine[side > 0])[:, None]
        shade = np.where(roads.kind == "arterial", 0.22, 0.26)
        road = self._raster(
            list(
                zip(
                    shapely.buffer(geoms, roads.width.to_numpy() / 2, cap_style="square"),
                    np.arange(1, len(roads) + 1),
                )
            )
        )
        on = road > 0
        alb[on] = (shade[road[on] - 1] * (1 + 0.04 * fine[on]))[:, None] * np.array(
            [1.0, 1.0, 1.04]
        )
        self.road_mask = on
        marks = self._raster([(g, 1) for g in _markings(roads)], all_touched=self.gsd > 0.35)
        alpha = float(np.clip(0.25 / self.gsd, 0.35, 0.9))
        m = (marks > 0) & on
        alb[m] = alb[m] * (1 - alpha) + alpha * np.array([0.88, 0.88, 0.85])
        trees = [(i, g) for i, (g, c, z) in enumerate(zip(lu.geometry, cls, zone)) if z == "tree"]
        tree = self._raster([(g, i + 1) for i, g in trees])
        t_on = tree > 0
        canopy = 1 + 0.25 * ndimage.gaussian_filter(fine, 0.8)[t_on]
        alb[t_on] = np.array([0.14, 0.26, 0.11]) * canopy[:, None]
        height[t_on] = lu.height.to_numpy()[tree[t_on] - 1]
        bidx = np.flatnonzero(cls == "building")
        bld = self._raster([(lu.geometry.iat[i], k + 1) for k, i in enumerate(bidx)])
        b_on = bld > 0
        roof = ROOF_COLOURS[rng.integers(0, len(ROOF_COLOURS), len(bidx) + 1)]
        edge = b_on & ~ndimage.binary_erosion(bld > 0, iterations=1) | (
            b_on & (ndimage.grey_erosion(bld, 3) != bld)
        )
        alb[b_on] = roof[bld[b_on]] * (1 + 0.04 * fine[b_on])[:, None]
        alb[edge] *= 0.8
        height[b_on] = lu.height.to_numpy()[bidx][bld[b_on] - 1]
        self.albedo, self.height = alb, height
        self.glow = ndimage.gaussian_filter(on.astype(np.float32), 4.0 / self.gsd)[
            ..., None
        ] * np.array([1.0, 0.72, 0.42], np.float32)

    # -- per frame ---------------------------------------------------------------------
    def _shadow(self, az: float, el: float) -> np.ndarray:
        key = (int(round(az / 3)), int(round(el / 2)))
        if key in self._shadow_cache:
            return self._shadow_cache[key]
        el_r, az_r = math.radians(max(el, 3.0)), math.radians(az)
        dx, dy = (
            math.sin(az_r),
            -math.cos(az_r),
        )  # pixel step towards the sun (rows grow southwards)
        drop = self.gsd * math.tan(el_r)
        top = float(self.height.max())
        shadow = np.zeros((self.h, self.w), bool)
        for d in range(1, int(min(top / drop, 80)) + 1):
            oy, ox = int(round(d * dy)), int(round(d * dx))
            if abs(oy) >= self.h or abs(ox) >= self.w:  # the shadow has left the scene
                break
            src = self.height[max(oy, 0) : self.h + min(oy, 0), max(ox, 0) : self.w + min(ox, 0)]
            dst = np.s_[max(-oy, 0) : self.h + min(-oy, 0), max(-ox, 0) : self.w + min(-ox, 0)]
            shadow[dst] |= src - d * drop > self.height[dst] + 0.3
        self._shadow_cache[key] = shadow
        return shadow

    def render(self, time, veh: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One frame.

        Parameters
        ----------
        time : datetime-like
            UTC time of the frame (sets sun, illumination and shadows).
        veh : dict of ndarray
            Vehicles of the frame as returned by :func:`trafficrnn.synth.vehicles.place_vehicles`.

        Returns
        -------
        image : ndarray of uint8, shape (3, H, W)
            RGB; valid pixels are in ``[VALID_MIN, 255]`` (kept well above 0 so that JPEG
            compression never turns them into nodata), clouded pixels are 0 (nodata).
        cloud : ndarray of bool, shape (H, W)
        """
        az, el = (float(v[0]) for v in sun_position([time], self.city.lat, self.city.lon))
        day = max(0.0, math.sin(math.radians(el)))
        colour = self.albedo.copy()
        shadow = self._shadow(az, el) if el > 2 else np.zeros((self.h, self.w), bool)
        vshadow = np.zeros((self.h, self.w), bool)
        self._draw_vehicles(colour, vshadow, veh, az, el)
        ambient = 0.05 + 0.45 * day**0.5
        direct = 1.0 * day**0.6
        warm = (
            np.array([1.0, 1.0 - 0.12 * (1 - day) ** 3, 1.0 - 0.25 * (1 - day) ** 3], np.float32)
            if el > 0
            else 1.0
        )
        lit = ambient + direct * ~(shadow | vshadow)
        img = colour * (lit[..., None] * warm)
        night = float(np.clip((6 - el) / 10, 0, 1))
        if night > 0:
            img += colour * self.glow * (0.9 * night)
        lamps = float(
            np.clip((12 - el) / 10, 0, 1)
        )  # vehicles light up from dusk (sun below 12 degrees)
        if lamps > 0:
            self._light_vehicles(img, veh, lamps)
        img += self._noise[self.rng.integers(0, 4)] * (0.6 + 0.4 * (1 - day))
        img = (
            np.clip(VALID_MIN + img * (255.0 - VALID_MIN) * 1.1, VALID_MIN, 255)
            .astype(np.uint8)
            .transpose(2, 0, 1)
        )
        cloud = np.zeros((self.h, self.w), bool)
        if self.clouds:
            # covered share: cloud_cover on average, none in about half of the frames, drifting slowly
            self._cloudiness = (
                0.9 * self._cloudiness + math.sqrt(1 - 0.9**2) * self.rng.standard_normal()
            )
            share = min(0.9, 2.5 * self.cloud_cover * max(0.0, self._cloudiness))
            shift = (self.rng.integers(0, self.h), self.rng.integers(0, self.w))
            if share > 0.002:
                thr = self._cloud_sorted[int((1 - share) * (self._cloud_sorted.size - 1))]
                field = np.roll(self._cloud, shift, (0, 1))[: self.h, : self.w]
                cloud = field > thr
                haze = np.clip((field - thr + 0.4) / 0.4, 0, 1) * ~cloud
                img = (img * (1 - 0.7 * haze) + 0.7 * 235 * haze).astype(np.uint8)
                img[:, cloud] = 0
        return img, cloud

    def _light_vehicles(self, img, veh, strength: float) -> None:
        """Add head- and tail-lamps, and the pool of light the headlamps throw ahead, to ``img``
        (H, W, 3) at dusk and night (``strength`` in (0, 1]): what shows a vehicle in the dark."""
        if len(veh["x"]) == 0:
            return
        inv = ~self.city.transform
        hd = np.radians(veh["heading"])
        fx, fy = np.sin(hd), np.cos(hd)
        rx, ry = fy, -fx
        half = np.array([KINDS[k]["length"] for k in KIND_NAMES])[veh["kind"]] / 2
        side = np.array([KINDS[k]["width"] for k in KIND_NAMES])[veh["kind"]] / 2 - 0.3
        # (along, across, colour, strength): lamps at the corners, a fading pool 1-4 m ahead
        spots = [(half - 0.3, s, LAMP_HEAD, 1.0) for s in (-side, side)]
        spots += [(-half + 0.3, s, LAMP_TAIL, 0.9) for s in (-side, side)]
        spots += [
            (half + d, a * side, LAMP_HEAD, 0.45 - 0.08 * d)
            for d in (1.0, 2.0, 3.0, 4.0)
            for a in (-0.5, 0.5)
        ]
        for along, across, tint, weight in spots:
            c, r = inv * (veh["x"] + along * fx + across * rx, veh["y"] + along * fy + across * ry)
            r, c = np.asarray(r, np.int64), np.asarray(c, np.int64)
            ok = (r >= 0) & (r < self.h) & (c >= 0) & (c < self.w)
            img[r[ok], c[ok]] += tint * (weight * strength)

    def _draw_vehicles(self, colour, vshadow, veh, az, el) -> None:
        """Paint vehicle bodies (with windscreens) into ``colour`` and their shadows into ``vshadow``."""
        inv = ~self.city.transform
        hd = np.radians(veh["heading"])
        fx, fy = np.sin(hd), np.cos(hd)  # forward unit vector in world coords
        rx, ry = fy, -fx  # right
        step = 0.45 * self.gsd
        sun = (math.sin(math.radians(az)), math.cos(math.radians(az)))
        tan_el = math.tan(math.radians(max(el, 8.0)))
        for k, name in enumerate(KIND_NAMES):
            sel = np.flatnonzero(veh["kind"] == k)
            if sel.size == 0:
                continue
            L, W, H = (KINDS[name][q] for q in ("length", "width", "height"))
            u, v = np.meshgrid(
                np.arange(-L / 2, L / 2 + 1e-6, step),
                np.arange(-W / 2, W / 2 + 1e-6, step),
                indexing="ij",
            )
            u, v = u.ravel(), v.ravel()
            x = veh["x"][sel, None] + u * fx[sel, None] + v * rx[sel, None]
            y = veh["y"][sel, None] + u * fy[sel, None] + v * ry[sel, None]
            if el > 2:
                off = min(H / tan_el, 8.0)
                c, r = inv * (x - sun[0] * off, y - sun[1] * off)
                r, c = r.astype(np.int64).ravel(), c.astype(np.int64).ravel()
                ok = (r >= 0) & (r < self.h) & (c >= 0) & (c < self.w)
                vshadow[r[ok], c[ok]] = True
            c, r = inv * (x, y)
            r, c = r.astype(np.int64), c.astype(np.int64)
            body = np.broadcast_to(veh["colour"][sel, None, :], (sel.size, u.size, 3)).copy()
            front = u / L
            glass = (
                ((front > 0.12) & (front < 0.3)) | ((front < -0.32) & (front > -0.42))
                if name != "truck"
                else (front > 0.33) & (front < 0.42)
            )
            body[:, glass] = [0.10, 0.11, 0.13]
            if name == "bus":
                body[:, (np.abs(v) < W / 4) & (np.abs(front) < 0.35)] = [0.8, 0.8, 0.78]
            if name == "truck":
                body[:, front < 0.3] = [0.80, 0.80, 0.78]
            ok = (r >= 0) & (r < self.h) & (c >= 0) & (c < self.w)
            colour[r[ok], c[ok]] = body[ok]
            vshadow[r[ok], c[ok]] = False


def _markings(roads) -> list:
    """Lane markings as line geometries: dashed centre and lane lines, solid edges on arterials."""
    out = []
    for g, kind, lanes, oneway, width in zip(
        roads.geometry, roads.kind, roads.lanes, roads.oneway, roads.width
    ):
        length = g.length
        if length < 20:
            continue
        core = shapely.ops.substring(g, 9.0, length - 9.0)
        offsets = []
        if not oneway:
            offsets.append((0.0, kind != "arterial"))
            lw = (width - (2.0 if kind == "arterial" else 0.0)) / (2 * lanes)
            for k in range(1, lanes):
                offsets += [(k * lw + 1.0, True), (-(k * lw + 1.0), True)]
            if kind == "arterial":
                offsets += [(0.9, False), (-0.9, False)]
        else:
            lw = width / lanes
            for k in range(1, lanes):
                offsets.append((-width / 2 + k * lw, True))
        for off, dashed in offsets:
            line = core.offset_curve(off) if off else core
            if not dashed:
                out.append(line)
                continue
            d = np.arange(0.0, line.length - 3.0, 9.0)
            out += [shapely.ops.substring(line, a, a + 3.0) for a in d]
    return out
