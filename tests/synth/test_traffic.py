import numpy as np
import pandas as pd
import pytest

from trafficrnn.errors import ConfigError
from trafficrnn.synth.city import make_city
from trafficrnn.synth.traffic import build_network, demand_profile, run_traffic


def test_demand_profile__daily_and_weekly_cycle():
    day = pd.date_range("2024-06-04", periods=96, freq="15min")  # a Tuesday, UTC
    prof = demand_profile(day, utc_offset_h=2.0)["total"]
    local_h = (day + pd.Timedelta(hours=2)).hour
    night, am, mid, pm = (prof[local_h == h].mean() for h in (3, 8, 12, 17))
    assert am > mid > night and pm > mid
    sunday = demand_profile(day + pd.Timedelta(days=5, hours=-2), utc_offset_h=2.0)  # local Sunday
    assert sunday["weekend"].all() and sunday["total"].max() < prof.max()
    assert sunday["am"].max() == 0.0


def test_run_traffic__conservation_on_links_and_network():
    city = make_city(192, 1.0, seed=2)
    net = build_network(city)
    times = pd.date_range("2024-06-04T05:00", periods=13, freq="5min")
    run = run_traffic(city, net, times, seed=2)
    counts = np.stack([np.bincount(net.cell_link, n, minlength=len(net.link)) for n in run.cell_n])
    np.testing.assert_allclose(counts - counts[0], run.link_in - run.link_out, atol=1e-6)
    stored = run.cell_n.sum(1)
    np.testing.assert_allclose(stored - stored[0], run.entered - run.exited, atol=1e-6)
    assert run.entered[-1] > 50  # traffic actually flows


def test_run_traffic__deterministic_for_a_seed():
    city = make_city(128, 1.0, seed=1)
    net = build_network(city)
    times = pd.date_range("2024-06-04T06:00", periods=4, freq="5min")
    a, b = (
        run_traffic(city, net, times, seed=9, spinup=pd.Timedelta(minutes=30)) for _ in range(2)
    )
    np.testing.assert_array_equal(a.cell_n, b.cell_n)


def test_run_traffic__incident_queue_spills_back_at_shock_speed_and_releases(corridor):
    net = build_network(corridor)
    times = pd.date_range("2024-06-04T06:00", periods=151, freq="1min")  # 08:00-10:30 local
    cell = int(net.last[3])
    inc = pd.DataFrame(
        [
            {
                "start": pd.Timestamp("2024-06-04T06:30"),
                "end": pd.Timestamp("2024-06-04T07:30"),
                "link": 3,
                "cell": cell,
                "factor": 0.15,
            }
        ]
    )
    # below capacity before the incident (demand_scale=1 runs over it at the peaks)
    run = run_traffic(
        corridor,
        net,
        times,
        seed=0,
        incidents=inc,
        incident_rate=0.0,
        event_prob=0.0,
        demand_scale=0.6,
    )
    k = run.cell_n / net.cell_len  # vehicles per metre
    queued = k[:, :cell] > 0.4 * net.link.kj.iat[0]
    tail = np.where(queued.any(1), cell - queued.argmax(1), 0)  # queue length in cells

    def at(hhmm):
        return times.get_loc(pd.Timestamp(f"2024-06-04T{hhmm}"))

    assert tail[at("06:29")] == 0
    assert 0 < tail[at("06:32")] < tail[at("06:35")] < tail[at("06:38")]  # grows upstream
    assert tail[at("08:30")] == 0  # released after the incident
    # the bottleneck passes the reduced capacity ...
    q_b = (run.link_out[at("06:38"), 3] - run.link_out[at("06:32"), 3]) / 360.0
    assert q_b == pytest.approx(0.15 * net.link.qcap.iat[3], rel=0.2)
    # ... and the tail moves upstream at the shock speed (q_up - q_b) / (k_queue - k_up)
    q_up = (run.link_in[at("06:38"), 0] - run.link_in[at("06:32"), 0]) / 360.0
    k_up = k[at("06:32") : at("06:38"), : cell - tail[at("06:38")] - 1].mean()
    k_queue = k[at("06:38"), cell - tail[at("06:38")] + 1 : cell].mean()
    theory = (q_up - q_b) / (k_queue - k_up)
    measured = (tail[at("06:38")] - tail[at("06:32")]) * net.cell_len[0] / 360.0
    assert 0.6 * theory < measured < 1.6 * theory


def test_run_traffic__bad_step():
    city = make_city(64, 1.0, seed=0)
    net = build_network(city)
    times = pd.date_range("2024-06-04", periods=3, freq="3s")
    with pytest.raises(ConfigError, match="multiple of dt=2.0"):
        run_traffic(city, net, times)


def test_build_network__bad_dt():
    with pytest.raises(ConfigError, match="dt=0 is invalid"):
        build_network(make_city(64, 1.0, seed=0), dt=0)
