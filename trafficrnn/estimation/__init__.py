"""The pieces of :class:`~trafficrnn.estimator.TrafficForecaster` besides its training loop: input
checks (``checks``), the model's inputs beside the frames (``inputs``), context maps (``context``),
exogenous covariates (``covariates``), the fitted state (``state``), saving and loading
(``persist``), training checkpoints (``checkpoints``) and scoring beside the baselines
(``evaluation``)."""
