"""Traffic dynamics of the synthetic city: a cell-transmission model with signals, daily and weekly demand
cycles, origin–destination hotspots, incidents, events and rain, whose queues spill back at kinematic-wave speed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pandas as pd

from trafficrnn.errors import ConfigError
from trafficrnn.synth.city import ROAD_CLASSES, City

KJ_LANE = 0.15  # jam density, vehicles per metre and lane
SIGNAL_CYCLES = (40.0, 70.0)  # seconds: each signalised node draws its cycle length from this range
SPINUP = pd.Timedelta(hours=3)  # traffic simulated before the first frame, so queues are in place
MAX_WAIT = 900.0  # seconds of demand that queue at an entry before drivers divert
TRIP_RATE = 0.03  # trips per second that a node of unit land-use weight starts at full demand (car parks, side streets)
DEMAND = (
    1.5  # demand at demand_scale=1: the arterials run over their signals' capacity at the peaks
)
CLASS_W = {"arterial": 3.0, "collector": 2.0, "local": 1.0}


@dataclass
class Network:
    """Directed links split into cells, with turning movements at nodes (arrays indexed by link / cell / movement)."""

    link: pd.DataFrame  # road, u, v, x0, y0, x1, y1, length, lanes, lane_w, oneway, kind, vf, qcap, kj, w, entry, exit
    cell_link: np.ndarray  # (C,) link of each cell
    cell_start: np.ndarray  # (C,) distance of the cell start from the link start (m)
    cell_len: np.ndarray  # (C,)
    first: np.ndarray  # (L,) first cell of each link
    last: np.ndarray  # (L,) last cell of each link
    mov_from: np.ndarray  # (M,) from link
    mov_to: np.ndarray  # (M,) to link
    mov_straight: np.ndarray  # (M,) bool
    mov_cbd: np.ndarray  # (M,) cosine between the to-link heading and the direction to the CBD
    green: np.ndarray  # (L,) green share at the downstream node (1 where unsignalised)
    phase: np.ndarray  # (L,) start of the green window in the signal cycle, as a fraction
    cycle: np.ndarray  # (L,) signal cycle length (s) at the downstream node


def build_network(city: City, dt: float = 2.0) -> Network:
    """Directed links, cells of at least ``free speed × dt`` length, and movements of ``city``.

    Raises
    ------
    ConfigError
        If ``dt`` is not in (0, 10] seconds.
    """
    if not 0 < dt <= 10:
        raise ConfigError(
            f"dt={dt!r} is invalid: expected a simulation step in (0, 10] seconds, e.g. 2"
        )
    link = _directed_links(city.roads, city.nodes)
    cell_link, cell_start, cell_len, first, last = _cells(link, dt)
    mf, mt, straight, cos_cbd = _movements(link, city.cbd)
    green, phase, cycle = _signals(link, len(city.nodes))
    return Network(
        link,
        cell_link,
        cell_start,
        cell_len,
        first,
        last,
        mf,
        mt,
        straight,
        cos_cbd,
        green,
        phase,
        cycle,
    )


# build_network's steps: the directed links, their cells, the turning movements, the signals
def _directed_links(roads, nodes: pd.DataFrame) -> pd.DataFrame:
    """One row per direction of travel of each road, with its geometry, capacity and wave speed."""
    xy = nodes[["x", "y"]].to_numpy()
    rows = []
    for r in roads.itertuples():
        cls = ROAD_CLASSES[r.kind]
        dirs = [(r.u, r.v)] if r.oneway else [(r.u, r.v), (r.v, r.u)]
        for u, v in dirs:
            rows.append(
                (
                    r.road_id,
                    r.axis,
                    u,
                    v,
                    r.lanes,
                    cls["lane_w"],
                    r.oneway,
                    r.kind,
                    r.speed_limit / 3.6,
                    cls["cap_lane"] / 3600.0,
                )
            )
    link = pd.DataFrame(
        rows, columns=["road", "axis", "u", "v", "lanes", "lane_w", "oneway", "kind", "vf", "qlane"]
    )
    link[["x0", "y0"]] = xy[link.u]
    link[["x1", "y1"]] = xy[link.v]
    link["length"] = np.hypot(link.x1 - link.x0, link.y1 - link.y0).clip(lower=1.0)
    link["qcap"] = link.qlane * link.lanes
    link["kj"] = KJ_LANE * link.lanes
    link["w"] = link.qlane / (KJ_LANE - link.qlane / link.vf)
    bnd = nodes.boundary.to_numpy()
    link["entry"], link["exit"] = bnd[link.u], bnd[link.v]
    return link


def _cells(link: pd.DataFrame, dt: float):
    """Cells of at least ``vf × dt``: each cell's link, start and length, each link's first and last cell."""
    n_cells = np.maximum(1, np.floor(link.length / (link.vf * dt))).astype(int).to_numpy()
    cell_link = np.repeat(np.arange(len(link)), n_cells)
    last = np.cumsum(n_cells) - 1
    first = last - n_cells + 1
    pos = np.arange(len(cell_link)) - first[cell_link]
    cell_len = (link.length.to_numpy() / n_cells)[cell_link]
    return cell_link, pos * cell_len, cell_len, first, last


def _movements(link: pd.DataFrame, cbd):
    """Every in-link to every out-link at an inner node (U-turns only where nothing else): from and
    to links, whether straight on, and the cosine of the to-link's heading towards ``cbd``."""
    heading = np.arctan2(link.y1 - link.y0, link.x1 - link.x0).to_numpy()
    out_by_node = link.groupby("u").groups
    mf, mt = [], []
    for i, (v, u, at_exit) in enumerate(zip(link.v, link.u, link.exit)):
        if at_exit:
            continue
        outs = [j for j in out_by_node.get(v, []) if link.v.iat[j] != u]
        outs = outs or [j for j in out_by_node.get(v, [])]
        mf += [i] * len(outs)
        mt += outs
    mf, mt = np.asarray(mf, int), np.asarray(mt, int)
    turn = np.abs((heading[mt] - heading[mf] + np.pi) % (2 * np.pi) - np.pi)
    node_x, node_y = link.x0.to_numpy()[mt], link.y0.to_numpy()[mt]
    return mf, mt, turn < 0.5, _cos_to(heading[mt], node_x, node_y, cbd)


def _signals(link: pd.DataFrame, n_nodes: int):
    """Green share, phase and cycle length of each link's signal at its downstream node."""
    # green share: own class weight against the strongest other road at the downstream node
    cw = link.kind.map(CLASS_W).to_numpy()
    green = np.ones(len(link))
    rng = np.random.default_rng(len(link))
    node_offset = rng.random(n_nodes)
    # cycle lengths differ between nodes, so no frame cadence samples every signal at one phase
    node_cycle = rng.uniform(*SIGNAL_CYCLES, n_nodes)
    for idx in link.groupby("v").groups.values():
        idx = np.asarray(idx)
        roads_here = link.road.to_numpy()[idx]
        if len(set(roads_here)) < 3:  # a bend or a boundary: no signal
            continue
        for i in idx:
            other = cw[idx][roads_here != link.road.iat[i]].max()
            green[i] = float(np.clip(cw[i] / (cw[i] + other), 0.3, 0.7)) * 0.92
    axis = link.axis.to_numpy()
    phase = (node_offset[link.v.to_numpy()] + np.where(axis == 0, 0.0, 1.0 - green)) % 1.0
    return green, phase, node_cycle[link.v.to_numpy()]


def _cos_to(heading: np.ndarray, x: np.ndarray, y: np.ndarray, target) -> np.ndarray:
    """Cosine between headings (radians from east) at ``(x, y)`` and the direction to ``target``, faded within 100 m."""
    dx, dy = target[0] - x, target[1] - y
    dist = np.hypot(dx, dy).clip(min=1.0)
    return (np.cos(heading) * dx + np.sin(heading) * dy) / dist * np.minimum(1.0, dist / 100.0)


def _bump(h, mu, s):
    return np.exp(-0.5 * ((h - mu) / s) ** 2)


def demand_profile(
    times: pd.DatetimeIndex | np.ndarray, utc_offset_h: float = 0.0
) -> dict[str, np.ndarray]:
    """Daily and weekly demand cycle at UTC ``times``.

    Returns
    -------
    dict of numpy arrays, each of shape ``(T,)``
        ``total`` (relative trip rate, about 1 at the weekday morning peak), ``am`` and ``pm``
        (commute peaks, 0 on weekends), ``weekend`` (bool).
    """
    local = pd.DatetimeIndex(times) + pd.Timedelta(hours=utc_offset_h)
    h = (local.hour + local.minute / 60 + local.second / 3600).to_numpy(float)
    weekend = np.asarray(local.day_of_week >= 5)
    plateau = 1 / (1 + np.exp(-(h - 6.3) / 0.6)) / (1 + np.exp(-(21.0 - h) / 1.0))
    am, pm = _bump(h, 7.9, 0.95), _bump(h, 17.3, 1.35)
    wd = 0.07 + 0.55 * plateau + 0.55 * am + 0.5 * pm
    we = 0.06 + 0.42 * _bump(h, 13.8, 3.4) + 0.08 * plateau
    return {
        "total": np.where(weekend, we, wd),
        "am": np.where(weekend, 0.0, am),
        "pm": np.where(weekend, 0.0, pm),
        "weekend": weekend,
    }


@dataclass
class TrafficRun:
    """Cell states at the frame times and the bookkeeping that proves conservation.

    Attributes
    ----------
    times : pandas.DatetimeIndex, length T
    cell_n : ndarray, shape (T, C)
        Vehicles in each cell at each frame.
    cell_speed : ndarray, shape (T, C)
        Speed (m/s) of the fundamental diagram at each cell's density.
    link_in, link_out : ndarray, shape (T, L)
        Cumulative vehicles that entered / left each link since the first frame.
    entered, exited : ndarray, shape (T,)
        Cumulative vehicles that entered the network (boundary + parking) / left it.
    queued : ndarray, shape (T,)
        Vehicles waiting to enter (outside the scene or in car parks).
    incidents, events : pandas.DataFrame
        ``start``, ``end``, location and effect of each incident; ``kind`` (``event`` at a
        venue node, or city-wide ``rain`` that cuts capacity by 20 %), ``start``, ``end`` of each event.
    """

    times: pd.DatetimeIndex
    cell_n: np.ndarray
    cell_speed: np.ndarray
    link_in: np.ndarray
    link_out: np.ndarray
    entered: np.ndarray
    exited: np.ndarray
    queued: np.ndarray
    incidents: pd.DataFrame
    events: pd.DataFrame


def run_traffic(
    city: City,
    net: Network,
    times: pd.DatetimeIndex,
    *,
    seed: int = 0,
    dt: float = 2.0,
    spinup: pd.Timedelta = SPINUP,
    demand_scale: float = 1.0,
    incident_rate: float = 0.05,
    event_prob: float = 0.4,
    incidents: pd.DataFrame | None = None,
    progress=None,
) -> TrafficRun:
    """Run the cell-transmission model and record the state at each of ``times``.

    Parameters
    ----------
    city, net : City, Network
    times : pandas.DatetimeIndex
        Regular UTC frame times; their spacing must be a multiple of ``dt``.
    seed : int
        Seed of demand noise, incidents and events.
    dt : float
        Simulation step in seconds (the cells of ``net`` were built for it).
    spinup : pandas.Timedelta
        Simulated time before the first frame, so that it starts from a loaded network.
    demand_scale : float
        Multiplier of all demand. At 1 the arterials run over their signals' capacity at the weekday
        peaks: queues build for an hour or more, spill back and dissolve after the peak.
    incident_rate : float
        Incidents per lane-kilometre and hour at full demand.
    event_prob : float
        Probability of an evening event on each simulated day.
    incidents : pandas.DataFrame, optional
        Scheduled incidents added to the random ones: ``start``, ``end`` (UTC), ``cell`` and
        ``factor`` (share of capacity left), ``link``.
    progress : callable, optional
        Called with the number of frames done after each frame.

    Returns
    -------
    TrafficRun

    Raises
    ------
    ConfigError
        If the frame spacing is not a positive multiple of ``dt`` or a rate is negative.
    """
    _check_run(times, dt, demand_scale, incident_rate, event_prob)
    rng = np.random.default_rng([seed, 2])
    a = _cell_arrays(city, net)
    clk = _clock(city, times, spinup, dt)
    plan = _plan(city, a, clk, event_prob, rng)
    inc_rows, active = _scheduled(incidents, clk.t0)
    rec = _run_steps(
        net, a, clk, plan, inc_rows, active, demand_scale, incident_rate, rng, progress
    )
    incidents = pd.DataFrame(inc_rows, columns=["start", "end", "link", "cell", "factor"])
    events = pd.concat([plan.events, plan.rain]).sort_values("start").reset_index(drop=True)
    return TrafficRun(times, **vars(rec), incidents=incidents, events=events)


# run_traffic's steps: the checks, the network's arrays, the clock, the daily draws and the event
# schedule (_plan), then the steps from an empty network (_run_steps): each minute demand, incidents
# and capacities, each simulation step the movement of the cell-transmission model, and at each
# frame time the record
def _check_run(times: pd.DatetimeIndex, dt: float, demand_scale, incident_rate, event_prob) -> None:
    """Raise ConfigError unless the frame spacing is a positive multiple of ``dt`` and no rate is negative."""
    step = (times[1] - times[0]).total_seconds() if len(times) > 1 else dt
    if step <= 0 or abs(step / dt - round(step / dt)) > 1e-9:
        raise ConfigError(
            f"frame step of {step} s is invalid: expected a positive multiple of dt={dt} s"
        )
    for name, val in (
        ("demand_scale", demand_scale),
        ("incident_rate", incident_rate),
        ("event_prob", event_prob),
    ):
        if not val >= 0:
            raise ConfigError(f"{name}={val!r} is invalid: expected a number >= 0")


class _Clock(NamedTuple):
    """The step counts of a run: from ``t0`` (spin-up start) to the last frame."""

    t0: pd.Timestamp
    n_steps: int  # simulation steps from t0 to the last frame
    frame_at: dict  # step -> frame index
    n_frames: int
    ctrl_every: int  # steps per minute of control
    n_days: int  # days of the daily draws (a day to spare on each side)
    day0: pd.Timestamp  # local midnight of the first day
    spinup_s: float  # seconds simulated before the first frame
    dt: float  # seconds per step


def _clock(city: City, times: pd.DatetimeIndex, spinup: pd.Timedelta, dt: float) -> _Clock:
    """The steps from the spin-up start to the last of ``times``, and where the frames and days fall."""
    t0 = times[0] - spinup
    n_steps = int(round((times[-1] - t0).total_seconds() / dt)) + 1
    return _Clock(
        t0=t0,
        n_steps=n_steps,
        frame_at={int(round((t - t0).total_seconds() / dt)): k for k, t in enumerate(times)},
        n_frames=len(times),
        ctrl_every=max(1, int(round(60.0 / dt))),
        n_days=int(np.ceil(n_steps * dt / 86400)) + 2,
        day0=(t0 + pd.Timedelta(hours=city.utc_offset_h)).normalize(),
        spinup_s=spinup.total_seconds(),
        dt=dt,
    )


class _Plan(NamedTuple):
    """What a run draws before its first step: each day's demand factor, the events, the rain, and
    the once-a-minute schedule built from them."""

    day_mult: np.ndarray
    events: pd.DataFrame
    rain: pd.DataFrame
    sched: SimpleNamespace


def _plan(city: City, a, clk: _Clock, event_prob: float, rng: np.random.Generator) -> _Plan:
    """Draw each day's demand factor, then the events and rain, and schedule them by the minute."""
    day_mult = np.exp(rng.normal(0, 0.2, clk.n_days))
    events, rain = _draw_events(city, a, clk.day0, clk.n_days, event_prob, rng)
    sched = _schedule(
        city, clk.t0, clk.n_steps, clk.ctrl_every, clk.dt, clk.day0, clk.n_days, rain, events
    )
    return _Plan(day_mult, events, rain, sched)


def _run_steps(
    net: Network,
    a,
    clk: _Clock,
    plan: _Plan,
    inc_rows: list,
    active: list,
    demand_scale: float,
    incident_rate: float,
    rng: np.random.Generator,
    progress,
) -> _Record:
    """Step the cell-transmission model from ``clk.t0`` to the last frame, counting the flows after
    the spin-up; return the record at the frame times."""
    near, to_venue = _venues(net, a, plan.events)
    st = _new_state(a)
    rec = _Record.empty(clk.n_frames, a)
    ctrl_every, dt, sched, day_mult = clk.ctrl_every, clk.dt, plan.sched, plan.day_mult
    for s in range(clk.n_steps):
        if s % ctrl_every == 0:  # once a minute: demand, incidents and capacities
            m = s // ctrl_every
            ctl = _demand(net, a, st, sched, m, day_mult, near, to_venue, demand_scale, rng)
            _incidents(net, a, ctl, sched.times, m, inc_rows, active, incident_rate, rng)
            _capacities(a, st, ctl, s * dt, active, dt)
        y_src, out_last, in_first, d_sink = _move(net, a, st, ctl, s, dt)
        if s * dt >= clk.spinup_s:
            st.link_in += in_first
            st.link_out += out_last
            st.entered += y_src.sum()
            st.exited += d_sink.sum()
        k = clk.frame_at.get(s + 1)
        if k is not None:
            rec.take(k, a, st)
            if progress is not None:
                progress(k + 1)
    return rec


def _venues(net: Network, a, events: pd.DataFrame) -> tuple[list, list]:
    """For each event: which nodes lie within 120 m of its venue, and how each movement heads to it."""
    near = [
        np.hypot(a.nodes.x - e.x, a.nodes.y - e.y).to_numpy() < 120 for e in events.itertuples()
    ]
    to_venue = [
        _cos_to(a.heading[net.mov_to], a.mov_x, a.mov_y, (e.x, e.y)) for e in events.itertuples()
    ]
    return near, to_venue


def _scheduled(incidents: pd.DataFrame | None, t0: pd.Timestamp) -> tuple[list, list]:
    """The scheduled incidents as rows (``inc_rows``) and as ``(start s, end s, cell, factor)``
    since ``t0`` (``active``)."""
    inc_rows = [] if incidents is None else incidents.to_dict("records")
    active: list[tuple[float, float, int, float]] = []  # (start s, end s, cell, factor) since t0
    if incidents is not None:
        active = [
            (
                (r["start"] - t0).total_seconds(),
                (r["end"] - t0).total_seconds(),
                int(r["cell"]),
                float(r["factor"]),
            )
            for r in inc_rows
        ]
    return inc_rows, active


def _new_state(a) -> _State:
    """An empty network: no vehicles, no queues, no noise, full capacity."""
    return _State(
        noise=np.zeros(len(a.nodes) + a.L),
        city_noise=0.0,
        N=np.zeros(len(a.clen)),
        srcq=np.zeros(a.L),
        link_in=np.zeros(a.L),
        link_out=np.zeros(a.L),
        entered=0.0,
        exited=0.0,
        capf=np.ones(len(a.clen)),
    )


@dataclass
class _Record:
    """What run_traffic records at the frame times (see TrafficRun)."""

    cell_n: np.ndarray
    cell_speed: np.ndarray
    link_in: np.ndarray
    link_out: np.ndarray
    entered: np.ndarray
    exited: np.ndarray
    queued: np.ndarray

    @classmethod
    def empty(cls, T: int, a) -> _Record:
        """Zeros for ``T`` frames."""
        C, L = len(a.clen), a.L
        return cls(
            np.zeros((T, C)),
            np.zeros((T, C)),
            np.zeros((T, L)),
            np.zeros((T, L)),
            np.zeros(T),
            np.zeros(T),
            np.zeros(T),
        )

    def take(self, k: int, a, st: _State) -> None:
        """Record frame ``k``: clip the cells at 0 vehicles, and store them, their speeds and the counts."""
        N = st.N
        np.maximum(N, 0.0, out=N)
        kden = N / a.clen
        speed = np.minimum(a.vf, a.w * (a.nmax / a.clen - kden) / np.maximum(kden, 1e-9))
        self.cell_n[k], self.cell_speed[k] = N, np.clip(speed, 0.3, None)
        self.link_in[k], self.link_out[k] = st.link_in, st.link_out
        self.entered[k], self.exited[k], self.queued[k] = st.entered, st.exited, st.srcq.sum()


@dataclass
class _State:
    """What run_traffic carries from step to step."""

    noise: np.ndarray  # demand noise of each node and entry link (AR(1) per minute)
    city_noise: float
    N: np.ndarray  # vehicles in each cell
    srcq: np.ndarray  # vehicles waiting to enter each link
    link_in: np.ndarray
    link_out: np.ndarray
    entered: float
    exited: float
    capf: np.ndarray  # share of capacity left in each cell (rain, incidents)


@dataclass
class _Control:
    """The once-a-minute settings of the movement step."""

    level: float
    wet: bool
    rate: np.ndarray
    beta: np.ndarray
    sink_l: np.ndarray
    exit_cap: np.ndarray | None = None


def _cell_arrays(city: City, net: Network):
    """Per-cell and per-link constants of the network as plain arrays."""
    lk = net.link
    nodes = city.nodes
    clen = net.cell_len
    inner_a = np.setdiff1d(np.arange(len(clen)), net.last)
    qlink = lk.qcap.to_numpy()
    link_u = lk.u.to_numpy()
    heading = np.arctan2(lk.y1 - lk.y0, lk.x1 - lk.x0).to_numpy()
    return SimpleNamespace(
        L=len(lk),
        lk=lk,
        nodes=nodes,
        clen=clen,
        vf=lk.vf.to_numpy()[net.cell_link],
        w=lk.w.to_numpy()[net.cell_link],
        qcap=lk.qcap.to_numpy()[net.cell_link],
        nmax=(lk.kj.to_numpy()[net.cell_link] * net.cell_len),
        inner_a=inner_a,
        inner_b=inner_a + 1,
        entry=lk.entry.to_numpy(),
        exit_=lk.exit.to_numpy(),
        has_mov=np.bincount(net.mov_from, minlength=len(lk)) > 0,
        link_u=link_u,
        link_v=lk.v.to_numpy(),
        qlink=qlink,
        # source split of each node over its outgoing links, by capacity
        cap_share=qlink / np.bincount(link_u, qlink, minlength=len(nodes))[link_u],
        res=nodes["prod_res"].to_numpy(),
        cbd=nodes["prod_cbd"].to_numpy(),
        com=nodes["prod_com"].to_numpy(),
        heading=heading,
        ent_cos=_cos_to(heading, lk.x0.to_numpy(), lk.y0.to_numpy(), city.cbd),
        mov_x=lk.x0.to_numpy()[net.mov_to],
        mov_y=lk.y0.to_numpy()[net.mov_to],
        ent_share=lk.kind.map({"arterial": 0.4, "collector": 0.28, "local": 0.12}).to_numpy(),
        lane_km=float((lk.length * lk.lanes).sum()) / 1000.0,
    )


def _draw_events(
    city: City, a, day0: pd.Timestamp, n_days: int, event_prob: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evening events (one a day with probability ``event_prob``, at a venue node) and rain episodes."""
    nodes = a.nodes
    cand = np.flatnonzero(~nodes.boundary.to_numpy() & (a.com + a.cbd > 0))
    ev_rows = []
    for d in range(n_days):
        if cand.size and rng.random() < event_prob:
            start = day0 + pd.Timedelta(days=d, hours=float(rng.uniform(18.0, 20.0)))
            venue = int(rng.choice(cand))
            ev_rows.append(
                {
                    "start": start - pd.Timedelta(hours=city.utc_offset_h),
                    "end": start
                    + pd.Timedelta(hours=float(rng.uniform(2.0, 3.0)))
                    - pd.Timedelta(hours=city.utc_offset_h),
                    "node": venue,
                    "x": nodes.x.iat[venue],
                    "y": nodes.y.iat[venue],
                    "visitors": float(rng.uniform(150, 400) * a.lane_km / 10),
                    "kind": "event",
                }
            )
        if rng.random() < 0.35:  # a rain episode: slower traffic and a little more of it, for hours
            start = day0 + pd.Timedelta(days=d, hours=float(rng.uniform(0, 24)))
            ev_rows.append(
                {
                    "start": start - pd.Timedelta(hours=city.utc_offset_h),
                    "end": start
                    + pd.Timedelta(hours=float(rng.uniform(1, 5)))
                    - pd.Timedelta(hours=city.utc_offset_h),
                    "node": -1,
                    "x": np.nan,
                    "y": np.nan,
                    "visitors": 0.0,
                    "kind": "rain",
                }
            )
    events = pd.DataFrame(ev_rows, columns=["kind", "start", "end", "node", "x", "y", "visitors"])
    return events[events.kind == "event"], events[events.kind == "rain"]


_PHI, _PHI_CITY = (
    math.exp(-60.0 / 3600.0),
    math.exp(-60.0 / 10800.0),
)  # per-minute memory of the demand noise


def _schedule(
    city: City,
    t0: pd.Timestamp,
    n_steps: int,
    ctrl_every: int,
    dt: float,
    day0: pd.Timestamp,
    n_days: int,
    rain: pd.DataFrame,
    events: pd.DataFrame,
) -> SimpleNamespace:
    """What the once-a-minute control reads at each of its times, computed for all of them at once:
    the demand profile, the day index, rain, and each event's arrival and departure windows."""
    times = t0 + pd.to_timedelta(np.arange(0, n_steps, ctrl_every) * dt, unit="s")
    prof = demand_profile(times, city.utc_offset_h)
    local = times + pd.Timedelta(hours=city.utc_offset_h)
    day = np.minimum(((local - day0) // pd.Timedelta(days=1)).to_numpy(), n_days - 1)
    wet = np.zeros(len(times), bool)
    for r in rain.itertuples():
        wet |= (r.start <= times) & (times < r.end)
    arrive = [
        (e.start - pd.Timedelta(hours=1.5) <= times) & (times < e.start)
        for e in events.itertuples()
    ]
    leave = [
        (e.end <= times) & (times < e.end + pd.Timedelta(minutes=50)) for e in events.itertuples()
    ]
    return SimpleNamespace(
        times=times,
        total=prof["total"],
        am=prof["am"],
        pm=prof["pm"],
        day=day,
        wet=wet,
        arrive=arrive,
        leave=leave,
        visitors=events["visitors"].to_numpy(float),
    )


def _demand(
    net: Network,
    a,
    st: _State,
    sched: SimpleNamespace,
    m: int,
    day_mult: np.ndarray,
    near: list,
    to_venue: list,
    demand_scale: float,
    rng: np.random.Generator,
) -> _Control:
    """Demand at control time ``m`` of ``sched``: the entry and source rates, turning shares and sinks
    (daily profile, noise, events, rain)."""
    L, nodes = a.L, a.nodes
    phi, phi_city = _PHI, _PHI_CITY
    st.noise = phi * st.noise + math.sqrt(1 - phi**2) * 0.5 * rng.standard_normal(st.noise.size)
    st.city_noise = (
        phi_city * st.city_noise + math.sqrt(1 - phi_city**2) * 0.35 * rng.standard_normal()
    )
    wet = bool(sched.wet[m])
    level = (
        (1.1 if wet else 1.0)
        * DEMAND
        * demand_scale
        * float(sched.total[m])
        * day_mult[sched.day[m]]
        * math.exp(st.city_noise)
    )
    am, pm = float(sched.am[m]), float(sched.pm[m])
    gamma = 1.0 * (am - pm)
    res, cbd, com = a.res, a.cbd, a.com
    prod = (
        level
        * TRIP_RATE
        * (res * (1 + 2.5 * am) + cbd * (0.3 + 3.0 * pm) + com * (1 + 0.6 * (1 - am - pm)))
    )
    sink = 0.02 + 0.10 * level * (res * (0.2 + 2.5 * pm) + cbd * (0.3 + 5.0 * am) + com * 0.8)
    ev_bias = np.zeros(len(net.mov_from))
    boost = 1.0
    for i, (nr, cv) in enumerate(zip(near, to_venue)):
        if sched.arrive[i][m]:  # arrivals
            sink = np.where(nr, sink + 0.5, sink)
            ev_bias = ev_bias + 1.5 * cv
            boost += 0.25
        elif sched.leave[i][m]:  # departures
            prod = prod + nr * sched.visitors[i] / 3000.0 / max(1, nr.sum())
    sink = np.clip(sink, 0, 0.8)
    qlink = a.qlink
    weight = (
        qlink[net.mov_to] ** 0.7
        * np.where(net.mov_straight, 2.5, 1.0)
        * np.exp(gamma * net.mov_cbd + ev_bias)
    )
    beta = weight / np.bincount(net.mov_from, weight, minlength=L)[net.mov_from]
    sink_l = np.where(a.has_mov, sink[a.link_v], 1.0)
    ns = np.exp(st.noise[: len(nodes)] - 0.125)
    rate = prod[a.link_u] * ns[a.link_u] * a.cap_share
    rate_ent = (
        level
        * boost
        * qlink
        * a.ent_share
        * (1 + 0.25 * gamma * a.ent_cos)
        * np.exp(st.noise[len(nodes) :] - 0.125)
    )
    rate = np.where(a.entry, rate_ent, rate)
    return _Control(level=level, wet=wet, rate=rate, beta=beta, sink_l=sink_l)


def _incidents(
    net: Network,
    a,
    ctl: _Control,
    times: pd.DatetimeIndex,
    m: int,
    inc_rows: list,
    active: list,
    incident_rate: float,
    rng: np.random.Generator,
) -> None:
    """Perhaps start an incident at control time ``m`` (a lane closure on a random cell, weighted by
    lane length): a row in ``inc_rows`` and a numeric entry in ``active``."""
    lk, L, level = a.lk, a.L, ctl.level
    if rng.random() < incident_rate * a.lane_km * level / 60.0:
        lw = (lk.length * lk.lanes).to_numpy()
        li = int(rng.choice(L, p=lw / lw.sum()))
        cell = int(rng.integers(net.first[li], net.last[li] + 1))
        dur = float(np.clip(rng.lognormal(math.log(45), 0.45), 20, 90))
        factor = 0.45 if lk.lanes.iat[li] >= 2 else 0.15
        now = times[m]
        end = now + pd.Timedelta(minutes=dur)
        inc_rows.append({"start": now, "end": end, "link": li, "cell": cell, "factor": factor})
        since = (now - times[0]).total_seconds()
        active.append((since, since + (end - now).total_seconds(), cell, factor))


def _capacities(a, st: _State, ctl: _Control, now_s: float, active: list, dt: float) -> None:
    """Capacity left in each cell at ``now_s`` seconds after the start (rain, incidents) and at the
    exits of the scene; incidents over by then leave ``active``."""
    capf = st.capf
    capf[:] = 0.8 if ctl.wet else 1.0
    active[:] = [inc for inc in active if now_s < inc[1]]
    for start, _, cell, factor in active:
        if start <= now_s:
            capf[cell] = min(capf[cell], factor)
    # traffic beyond the scene: exits clog as demand rises and when the city is busier than usual
    level, city_noise = ctl.level, st.city_noise
    exit_f = max(0.3, 0.95 - 0.6 * max(0.0, level - 0.5) - 0.25 * max(0.0, city_noise))
    ctl.exit_cap = a.qlink * dt * np.where(a.exit_, exit_f, 1.0)


def _move(net: Network, a, st: _State, ctl: _Control, s: int, dt: float):
    """One step of the cell-transmission model (sending, receiving, signals, turns, sources and sinks);
    updates ``st.N`` and ``st.srcq``. Returns the flows the bookkeeping adds up."""
    N, L, qlink, rate, sink_l = st.N, a.L, a.qlink, ctl.rate, ctl.sink_l
    clen, nmax, inner_a, inner_b, exit_ = a.clen, a.nmax, a.inner_a, a.inner_b, a.exit_
    srcq = st.srcq = np.minimum(
        st.srcq + rate * dt, rate * MAX_WAIT
    )  # drivers who would wait longer go elsewhere
    cq = a.qcap * st.capf * dt
    S = np.minimum(np.minimum(a.vf * dt / clen, 1.0) * N, cq)
    R = np.clip(np.minimum(cq, a.w * dt * (nmax - N) / clen), 0.0, nmax - N)
    y_in = np.minimum(S[inner_a], R[inner_b])
    cyc = (s * dt / net.cycle - net.phase) % 1.0
    s_last = np.minimum(S[net.last], qlink * dt * ((cyc < net.green) | (net.green >= 1)))
    d_sink = np.where(exit_, np.minimum(s_last, ctl.exit_cap), s_last * sink_l)
    d_mov = (s_last * (1 - sink_l))[net.mov_from] * ctl.beta
    d_src = np.minimum(srcq, qlink * dt)
    tot = np.bincount(net.mov_to, d_mov, minlength=L) + d_src
    f = np.where(tot > 0, np.minimum(1.0, R[net.first] / np.maximum(tot, 1e-12)), 1.0)
    y_mov = d_mov * f[net.mov_to]
    y_src = d_src * f
    out_last = np.bincount(net.mov_from, y_mov, minlength=L) + d_sink
    in_first = np.bincount(net.mov_to, y_mov, minlength=L) + y_src
    N[inner_a] -= y_in
    N[inner_b] += y_in
    N[net.last] -= out_last
    N[net.first] += in_first
    srcq -= y_src
    return y_src, out_last, in_first, d_sink
