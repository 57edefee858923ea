"""How good and how sure a run is: metrics, evaluating a split, calibration, the ensemble, tables, figures.
May import har_core.models, har_core.data."""
