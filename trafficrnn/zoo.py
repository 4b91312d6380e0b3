"""The model zoo: the packaged pretrained image models, to fine-tune on a stack with ``fit(..., init=...)``.

Each reads RGB images of 1 m pixels in 64 px tiles (64 m cells), 8 frames in and 6 leads out; it
was trained from images and vehicle points on other synthetic cities (the ConvGRU four weeks of
one city, the ConvLSTM one week of four side by side; ``benchmarks/pretrain.py``). Two days of a new city are too few to teach a recurrent forecaster
the daily cycle, queues and incidents; starting from these weights, a short fine-tuning learns the
new city's counts and traffic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trafficrnn.errors import UnknownNameError

if TYPE_CHECKING:
    from trafficrnn.estimator import TrafficForecaster

#: where the packaged models live (``<model>_1m64/``: weights in float16, ``config.json``)
WEIGHTS = Path(__file__).resolve().parent / "weights"
#: the training settings a pretrained model gets for fine-tuning (its architecture stays its own):
#: a validation and a test part, and a short time limit per fit
FINE_TUNE: dict[str, Any] = dict(
    val=0.15,
    test=0.15,
    max_time=1.2,
    trainer_kwargs=dict(max_epochs=40, patience=8, lr=1e-3, precision="auto", count_share=None),
)


def list_pretrained() -> list[str]:
    """The model names with a packaged pretrained model (e.g. ``["convgru", "convlstm"]``)."""
    return sorted(
        p.name.removesuffix("_1m64")
        for p in WEIGHTS.glob("*_1m64")
        if (p / "config.json").is_file()
    )


def pretrained(model: str = "convgru", **params: Any) -> TrafficForecaster:
    """The packaged pretrained ``model``, fitted, with the fine-tuning settings (:data:`FINE_TUNE`,
    then ``params``) for a copy that starts from it. ``params`` are TrafficForecaster parameters;
    a group dict given (``trainer_kwargs={"lr": 1e-4}``) changes those options of the group only.

    Examples
    --------
    >>> base = pretrained("convgru", max_time=1.5)
    >>> model = TrafficForecaster(**base.get_params())  # doctest: +SKIP
    >>> model.fit(images, vehicles=points, init=base)  # doctest: +SKIP

    Raises
    ------
    UnknownNameError
        If no pretrained model of that name is packaged (the message lists those that are).
    ConfigError
        For invalid ``params``, or an option of a group given on its own (``lr=``: its group named).
    """
    from trafficrnn.estimator import TrafficForecaster
    from trafficrnn.params import GROUP_OF, grouped, misplaced

    name = str(model).lower()
    if name not in list_pretrained():
        raise UnknownNameError(
            f"no packaged pretrained model {model!r}: the packaged ones are {list_pretrained()} "
            f"(in {WEIGHTS}); reinstall trafficrnn, or train one with benchmarks/pretrain.py"
        )
    for key, value in params.items():  # an option of a group on its own (lr=...): name its group
        if key in GROUP_OF:
            raise misplaced(key, value)
    est = TrafficForecaster.load(WEIGHTS / f"{name}_1m64")
    # the group dicts are merged option by option: the model's own training options stay unless set
    return est.set_params(**grouped(est.get_params(), FINE_TUNE, {"progress": True}, params))
