"""Tools over the whole kit: the papermill runner (``reproduce``) and speed benchmarks (``bench``)."""
