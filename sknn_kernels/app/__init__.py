"""The main job: cross-validated surrogate comparison, the report and the command line.

:func:`~sknn_kernels.compare_surrogates` (``compare``), :func:`~sknn_kernels.app.report.run_report`
and :func:`~sknn_kernels.app.report.write_report` (``report``), and ``sknn-kernels`` (``cli``). The
top of the stack: it may import every layer below, and nothing below imports it.
"""
