"""Tools around the experiments (e.g. exporting EDM's pickled teachers)."""
